//! Images onto an engine that has no registry: streamed from one engine's export (`docker save`)
//! into another's import (`docker load`), chunk by chunk, so memory stays flat whatever the
//! images weigh. Images the target already has (same id under the same name) are skipped; the
//! rest go in one archive, so layers they share travel once.

use std::collections::BTreeSet;

use futures::StreamExt;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::engine::{ContainerEngine, EngineError};

/// An image copy that failed, naming the images and both engines.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the source engine's images failed.
    #[error("reading images from {source_engine}")]
    Source {
        /// The source engine's address.
        source_engine: String,
        /// What the source engine answered.
        #[source]
        source: EngineError,
    },
    /// Loading into the target failed (the export may have failed with it).
    #[error("copying {images} from {source_engine} to {target_engine}")]
    Transfer {
        /// The images being copied, comma-separated.
        images: String,
        /// The source engine's address.
        source_engine: String,
        /// The target engine's address.
        target_engine: String,
        /// The export's error if it failed, else the load's.
        #[source]
        source: EngineError,
    },
    /// Copying was cancelled (Ctrl-C, SIGTERM); what the target loaded so far stays.
    #[error("copying images was cancelled")]
    Cancelled,
    /// The target holds a different image under the name after the load.
    #[error("after copying, {target_engine} holds {image} as {found} instead of {expected}")]
    Mismatch {
        /// The image name.
        image: String,
        /// The target engine's address.
        target_engine: String,
        /// The image id on the source engine.
        expected: String,
        /// The image id the target holds under the name (or that it holds none).
        found: String,
    },
}

/// What happened to one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CopyResult {
    /// Streamed across now.
    Copied,
    /// The target already had this image id under this name.
    Present,
    /// The source engine does not have it.
    MissingOnSource,
}

/// One image and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageCopy {
    /// The image name, as asked for.
    pub image: String,
    /// Its id on the source engine; `None` when the source does not have it.
    pub id: Option<String>,
    /// Whether it was copied, already there, or missing on the source.
    #[serde(flatten)]
    pub result: CopyResult,
}

/// Progress of a copy.
#[derive(Debug)]
pub enum CopyEvent<'a> {
    /// The images about to be streamed, and their summed sizes (shared layers counted once per
    /// image, so the archive is usually smaller).
    Streaming {
        /// The image names going into the archive.
        images: &'a [String],
        /// Their summed sizes in bytes, for a progress bar's length.
        estimate: u64,
    },
    /// Bytes streamed so far.
    Progress {
        /// The total so far, not the increment.
        bytes: u64,
    },
}

/// Bytes sent to the target per write: the export arrives in frames of a few KiB, and sending each
/// as it comes (a TLS record and a packet apiece) was measured slower than `docker load`.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Regroups a stream of small frames into chunks of about [`UPLOAD_CHUNK`] bytes.
fn coalesce(
    frames: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures::stream::unfold(
        (frames, bytes::BytesMut::new(), false),
        |(mut frames, mut buffer, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        buffer.extend_from_slice(&frame);
                        if buffer.len() >= UPLOAD_CHUNK {
                            let chunk = buffer.split().freeze();
                            return Some((Ok(chunk), (frames, buffer, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (frames, buffer, true))),
                    None if buffer.is_empty() => return None,
                    None => {
                        let chunk = buffer.split().freeze();
                        return Some((Ok(chunk), (frames, buffer, true)));
                    }
                }
            }
        },
    )
}

/// The images `packbox images copy` moves by default: the catalog's runtime images and the
/// environment images the source engine has.
pub async fn default_images(
    source: &dyn ContainerEngine,
    catalog: &Catalog,
) -> Result<Vec<String>, CopyError> {
    let mut images: BTreeSet<String> = catalog
        .runtimes()
        .iter()
        .flat_map(|r| r.versions.iter().map(|v| v.image.clone()))
        .collect();
    let envs = source
        .images_with_labels(&["packbox.kind=env".to_string()])
        .await
        .map_err(|e| CopyError::Source {
            source_engine: source.endpoint().to_string(),
            source: e,
        })?;
    images.extend(envs.into_iter().flat_map(|image| image.tags));
    Ok(images.into_iter().collect())
}

/// Copies images from `source` to `target`, skipping those the target has.
pub async fn copy(
    source: &dyn ContainerEngine,
    target: &dyn ContainerEngine,
    images: &[String],
    mut on_event: impl FnMut(CopyEvent<'_>),
) -> Result<Vec<ImageCopy>, CopyError> {
    let source_engine = source.endpoint().to_string();
    let target_engine = target.endpoint().to_string();
    let mut report = Vec::new();
    let mut wanted = Vec::new();
    let mut estimate = 0u64;
    for image in images {
        let source_error = |e| CopyError::Source {
            source_engine: source_engine.clone(),
            source: e,
        };
        let Some(id) = source.image_id(image).await.map_err(source_error)? else {
            report.push(ImageCopy {
                image: image.clone(),
                id: None,
                result: CopyResult::MissingOnSource,
            });
            continue;
        };
        let on_target = target
            .image_id(image)
            .await
            .map_err(|e| CopyError::Transfer {
                images: image.clone(),
                source_engine: source_engine.clone(),
                target_engine: target_engine.clone(),
                source: e,
            })?;
        if on_target.as_deref() == Some(id.as_str()) {
            report.push(ImageCopy {
                image: image.clone(),
                id: Some(id),
                result: CopyResult::Present,
            });
            continue;
        }
        estimate += source.image_size(image).await.map_err(source_error)?;
        wanted.push((image.clone(), id));
    }
    if wanted.is_empty() {
        return Ok(report);
    }

    let names: Vec<String> = wanted.iter().map(|(name, _)| name.clone()).collect();
    on_event(CopyEvent::Streaming {
        images: &names,
        estimate,
    });
    let transfer_error = |e| CopyError::Transfer {
        images: names.join(", "),
        source_engine: source_engine.clone(),
        target_engine: target_engine.clone(),
        source: e,
    };
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    // An export error ends the upload as an I/O error; the first one is kept to report.
    let export_error = std::sync::Arc::new(std::sync::Mutex::new(None::<EngineError>));
    let kept_error = export_error.clone();
    let archive = source.export_images(&names).map(move |chunk| match chunk {
        Ok(bytes) => {
            let _ = progress_tx.send(bytes.len() as u64);
            Ok(bytes)
        }
        Err(e) => {
            let message = crate::common::error_text::chain(&e);
            if let Ok(mut slot) = kept_error.lock() {
                slot.get_or_insert(e);
            }
            Err(std::io::Error::other(message))
        }
    });
    let import = target.import_images(Box::pin(coalesce(archive)));
    tokio::pin!(import);
    let mut sent = 0u64;
    let loaded = loop {
        tokio::select! {
            result = &mut import => break result,
            Some(bytes) = progress_rx.recv() => {
                sent += bytes;
                on_event(CopyEvent::Progress { bytes: sent });
            }
        }
    };
    let exported = export_error.lock().ok().and_then(|mut slot| slot.take());
    match (loaded, exported) {
        (_, Some(e)) => return Err(transfer_error(e)),
        (Err(e), None) => return Err(transfer_error(e)),
        (Ok(_), None) => {}
    }
    while let Ok(bytes) = progress_rx.try_recv() {
        sent += bytes;
    }
    on_event(CopyEvent::Progress { bytes: sent });

    for (image, id) in wanted {
        let found = target.image_id(&image).await.map_err(transfer_error)?;
        if found.as_deref() != Some(id.as_str()) {
            return Err(CopyError::Mismatch {
                image,
                target_engine: target_engine.clone(),
                expected: id,
                found: found.unwrap_or_else(|| "nothing".into()),
            });
        }
        report.push(ImageCopy {
            image,
            id: Some(id),
            result: CopyResult::Copied,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_frames_are_regrouped_without_losing_or_reordering_a_byte() {
        let frames: Vec<Result<bytes::Bytes, std::io::Error>> = (0..3000u32)
            .map(|i| Ok(bytes::Bytes::from(vec![(i % 251) as u8; 1000])))
            .collect();
        let expected: Vec<u8> = (0..3000u32)
            .flat_map(|i| vec![(i % 251) as u8; 1000])
            .collect();
        let chunks: Vec<bytes::Bytes> = coalesce(futures::stream::iter(frames))
            .map(|c| c.expect("no error"))
            .collect()
            .await;
        assert_eq!(chunks.len(), 3, "3 MB in chunks of at least 1 MiB");
        assert!(chunks[..2].iter().all(|c| c.len() >= UPLOAD_CHUNK));
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn an_export_error_ends_the_stream_after_what_came_before() {
        let frames = vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(std::io::Error::other("export failed")),
            Ok(bytes::Bytes::from_static(b"never sent")),
        ];
        let items: Vec<_> = coalesce(futures::stream::iter(frames)).collect().await;
        assert_eq!(
            items.len(),
            1,
            "the error ends it; what was buffered is dropped"
        );
        assert!(items[0].is_err());
    }
}
