//! The output of a container whose PID 1 is packbox's init (`init/`), as a run reads it: the
//! action's stdout and stderr arrive as frames on the container's stdout, and the last frame
//! holds the action's exit status, written by the init once the action's process has exited.
//!
//! That frame is what lets a run end at the action's exit instead of the engine's (which
//! notices a container's exit tens of milliseconds later). The action cannot write one: what it
//! prints is only ever a frame's payload, and it holds no handle on the container's stdout.
//!
//! A frame is one byte of kind (1 stdout, 2 stderr, 3 exit status, 4 to 6 artifacts), four bytes
//! of payload length (big-endian) and the payload; an exit status payload is a big-endian i32.
//! After the action's exit and before its status, the init sends the artifacts folder's files: a
//! header (4: the size as a big-endian u64, then the name's bytes), the bytes (5), and a refusal
//! (6: the name's bytes, a 0 byte, the reason) for each entry it did not send or cut short.

use bytes::Bytes;

use crate::engine::StreamKind;

/// Frame kinds, as the init writes them.
const KIND_STDOUT: u8 = 1;
const KIND_STDERR: u8 = 2;
const KIND_EXIT: u8 = 3;
const KIND_ARTIFACT: u8 = 4;
const KIND_ARTIFACT_DATA: u8 = 5;
const KIND_ARTIFACT_REFUSED: u8 = 6;
/// Kind and length.
const HEADER: usize = 5;
/// The longest payload accepted. The init writes at most 32 KiB at once; anything longer is not
/// the init speaking, and reading it would let the stream grow packbox's memory.
const MAX_PAYLOAD: usize = 1 << 20;

/// One frame of the init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes the action wrote on one of its streams.
    Output(StreamKind, Bytes),
    /// The action's process exited with this status (its exit code, or 128 + the signal that
    /// killed it).
    Exit(i64),
    /// An artifact's bytes follow, `size` of them, in [`Frame::ArtifactData`] frames.
    Artifact {
        /// The file's name in the artifacts folder, as the folder holds it (not checked yet).
        name: Bytes,
        /// Its size.
        size: u64,
    },
    /// Bytes of the artifact announced last.
    ArtifactData(Bytes),
    /// An entry of the artifacts folder that was not sent (or was cut short: the artifact
    /// announced last, when the names are the same).
    ArtifactRefused {
        /// The entry's name, as the folder holds it; empty for what concerns the whole folder.
        name: Bytes,
        /// Why, in the init's words.
        reason: String,
    },
}

/// The stream did not hold the init's frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A frame of a kind the init does not write.
    #[error("frame of unknown kind {0}")]
    UnknownKind(u8),
    /// A frame longer than the init writes.
    #[error("frame of {0} bytes, longer than the init writes")]
    TooLong(usize),
    /// An exit status frame whose payload is not four bytes.
    #[error("exit status frame of {0} bytes")]
    BadStatus(usize),
    /// An artifact header too short to hold a size.
    #[error("artifact frame of {0} bytes")]
    BadArtifact(usize),
}

/// Cuts the container's stdout, as the engine delivers it in chunks of any size, into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
}

impl FrameDecoder {
    /// The frames completed by `chunk`, in order; a frame cut by the end of the chunk waits for
    /// the next one.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, FrameError> {
        self.pending.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.pending.len() - at >= HEADER {
            let kind = self.pending[at];
            let mut length = [0u8; 4];
            length.copy_from_slice(&self.pending[at + 1..at + HEADER]);
            let length = u32::from_be_bytes(length) as usize;
            if length > MAX_PAYLOAD {
                return Err(FrameError::TooLong(length));
            }
            if self.pending.len() - at < HEADER + length {
                break;
            }
            let payload = &self.pending[at + HEADER..at + HEADER + length];
            frames.push(match kind {
                KIND_STDOUT => Frame::Output(StreamKind::Stdout, Bytes::copy_from_slice(payload)),
                KIND_STDERR => Frame::Output(StreamKind::Stderr, Bytes::copy_from_slice(payload)),
                KIND_EXIT => {
                    let status: [u8; 4] = payload
                        .try_into()
                        .map_err(|_| FrameError::BadStatus(length))?;
                    Frame::Exit(i64::from(i32::from_be_bytes(status)))
                }
                KIND_ARTIFACT => {
                    let (size, name) = payload
                        .split_first_chunk::<8>()
                        .ok_or(FrameError::BadArtifact(length))?;
                    Frame::Artifact {
                        name: Bytes::copy_from_slice(name),
                        size: u64::from_be_bytes(*size),
                    }
                }
                KIND_ARTIFACT_DATA => Frame::ArtifactData(Bytes::copy_from_slice(payload)),
                KIND_ARTIFACT_REFUSED => {
                    let (name, reason) = match payload.iter().position(|b| *b == 0) {
                        Some(at) => (&payload[..at], &payload[at + 1..]),
                        None => (payload, &[][..]),
                    };
                    Frame::ArtifactRefused {
                        name: Bytes::copy_from_slice(name),
                        reason: String::from_utf8_lossy(reason).into_owned(),
                    }
                }
                other => return Err(FrameError::UnknownKind(other)),
            });
            at += HEADER + length;
        }
        self.pending.drain(..at);
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::init_frame;

    /// A frame as the init writes it.
    fn encode(frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Output(StreamKind::Stdout, bytes) => init_frame(KIND_STDOUT, bytes),
            Frame::Output(StreamKind::Stderr, bytes) => init_frame(KIND_STDERR, bytes),
            Frame::Exit(code) => init_frame(KIND_EXIT, &(*code as i32).to_be_bytes()),
            Frame::Artifact { name, size } => {
                let mut payload = size.to_be_bytes().to_vec();
                payload.extend_from_slice(name);
                init_frame(KIND_ARTIFACT, &payload)
            }
            Frame::ArtifactData(bytes) => init_frame(KIND_ARTIFACT_DATA, bytes),
            Frame::ArtifactRefused { name, reason } => {
                let mut payload = name.to_vec();
                payload.push(0);
                payload.extend_from_slice(reason.as_bytes());
                init_frame(KIND_ARTIFACT_REFUSED, &payload)
            }
        }
    }

    fn out(text: &str) -> Frame {
        Frame::Output(StreamKind::Stdout, Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn frames_cut_anywhere_come_out_whole_and_in_order() {
        let frames = vec![
            out("hello"),
            Frame::Output(StreamKind::Stderr, Bytes::from_static(b"oops\n")),
            out(""),
            Frame::Artifact {
                name: Bytes::from_static(b"report.txt"),
                size: 3,
            },
            Frame::ArtifactData(Bytes::from_static(b"abc")),
            Frame::ArtifactRefused {
                name: Bytes::from_static(b"link"),
                reason: "not a regular file (a symlink)".into(),
            },
            Frame::Exit(143),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        for cut in 1..bytes.len() {
            let mut decoder = FrameDecoder::default();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(cut) {
                seen.extend(decoder.push(chunk).expect("frames"));
            }
            assert_eq!(seen, frames, "chunks of {cut} bytes");
        }
    }

    #[test]
    fn what_an_action_prints_is_payload_even_when_it_looks_like_a_status() {
        // An action that prints the bytes of an exit status frame: the init wraps them.
        let forged = encode(&Frame::Exit(0));
        let relayed = encode(&Frame::Output(
            StreamKind::Stdout,
            Bytes::from(forged.clone()),
        ));
        let frames = FrameDecoder::default().push(&relayed).expect("frames");
        assert_eq!(
            frames,
            [Frame::Output(StreamKind::Stdout, Bytes::from(forged))]
        );
    }

    #[test]
    fn a_stream_that_is_not_the_inits_is_refused_before_it_grows_memory() {
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&[9, 0, 0, 0, 1, b'x']),
            Err(FrameError::UnknownKind(9))
        );
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLong(u32::MAX as usize))
        );
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&[3, 0, 0, 0, 1, 0]),
            Err(FrameError::BadStatus(1))
        );
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&[4, 0, 0, 0, 2, 0, 1]),
            Err(FrameError::BadArtifact(2))
        );
    }
}
