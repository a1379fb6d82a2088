//! The web console: a page at `/` and its scripts and styles under `/console/`, built into the
//! binary from `assets/` (plain ES modules, no framework, no build step). It is a client of API
//! v1 like any other: it holds no data and no token of its own, so these routes need none; the
//! browser sends the token the person pasted (kept for the tab only) with each API call, and sees
//! only what that token may see.
//!
//! Every answer here carries a strict Content-Security-Policy: scripts and styles from this
//! origin only, no inline script, no other origin, no framing, and Trusted Types required, so a
//! string can never become HTML through `innerHTML` and the like even by mistake. The scripts
//! build every element with the DOM and put data in with `textContent` only.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// What the console's answers may load and do: only this origin's scripts, styles, images and
/// API; no inline script or style attribute, no plugin, no form posted anywhere, no frame around
/// it, and DOM sinks that parse HTML refuse strings (Trusted Types, no policy allowed).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// One file of the console: its name under `/console/`, its media type and its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

/// A JavaScript module of the console.
macro_rules! module {
    ($name:literal) => {
        Asset {
            name: $name,
            media_type: "text/javascript; charset=utf-8",
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

/// The page every console address starts from.
const INDEX: Asset = Asset {
    name: "index.html",
    media_type: "text/html; charset=utf-8",
    bytes: include_bytes!("assets/index.html"),
};

/// Everything served under `/console/` (the page itself is served at `/`).
const ASSETS: &[Asset] = &[
    Asset {
        name: "style.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/style.css"),
    },
    Asset {
        name: "icon.svg",
        media_type: "image/svg+xml",
        bytes: include_bytes!("assets/icon.svg"),
    },
    module!("app.js"),
    module!("api.js"),
    module!("dom.js"),
    module!("events.js"),
    module!("form.js"),
    module!("executions.js"),
    module!("execution.js"),
    module!("actions.js"),
    module!("status.js"),
];

/// Each asset's entity tag (a prefix of its SHA-256), so browsers revalidate instead of
/// fetching again; computed once, off every run's path.
static TAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|asset| {
            let digest = hex::encode(Sha256::digest(asset.bytes));
            // A hex digest in quotes is always a valid header value.
            HeaderValue::from_str(&format!("\"{}\"", &digest[..20]))
                .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// The console's routes, to merge into the server's router before authentication: they serve
/// only the built-in files, never data.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{name}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    answer(0, &INDEX, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == name) {
        Some(at) => answer(at + 1, &ASSETS[at], &headers),
        None => {
            let mut response =
                (StatusCode::NOT_FOUND, "no such file in the console\n").into_response();
            protect(response.headers_mut());
            response
        }
    }
}

/// An asset, or 304 when the browser holds this version of it.
fn answer(at: usize, asset: &Asset, request: &HeaderMap) -> Response {
    let tag = TAGS.get(at).cloned();
    let fresh = match (&tag, request.get(header::IF_NONE_MATCH)) {
        (Some(tag), Some(held)) => held.to_str().is_ok_and(|held| {
            held.split(',')
                .any(|one| one.trim() == tag.to_str().unwrap_or(""))
        }),
        _ => false,
    };
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.media_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Some(tag) = tag {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    protect(headers);
    response
}

/// The headers that keep the console's answers from being framed, sniffed, or made to run what
/// is not the console's own code.
fn protect(headers: &mut HeaderMap) {
    let fixed: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn assets_folder() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve/console/assets")
    }

    #[test]
    fn every_file_of_the_assets_folder_is_served_and_nothing_else() {
        let on_disk: BTreeSet<String> = std::fs::read_dir(assets_folder())
            .expect("the assets folder")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let served: BTreeSet<String> = std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|asset| asset.name.to_string())
            .collect();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn the_scripts_never_turn_a_string_into_markup_or_code() {
        // Trusted Types enforce this in the browser; this finds it before a browser does.
        let forbidden = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "javascript:",
            "createContextualFragment",
            "DOMParser",
            "localStorage",
            "document.cookie",
        ];
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).expect("UTF-8");
            for word in forbidden {
                assert!(!text.contains(word), "{} uses {word}", asset.name);
            }
        }
    }

    #[test]
    fn the_page_holds_no_inline_script_or_style() {
        let page = std::str::from_utf8(INDEX.bytes).expect("UTF-8");
        assert!(!page.contains("<script>") && !page.contains("style="));
        assert!(!page.contains(" on"), "no event handler attribute");
        for script in page.split("<script").skip(1) {
            assert!(script.contains("src=\"/console/"), "{script}");
        }
    }

    #[test]
    fn the_console_stays_small() {
        let total: usize = std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| a.bytes.len())
            .sum();
        assert!(total < 200 << 10, "the console's files hold {total} bytes");
    }

    #[tokio::test]
    async fn answers_carry_the_policy_and_revalidate_by_tag() {
        let first = index(HeaderMap::new()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let headers = first.headers();
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        let tag = headers[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        let second = index(again).await;
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        let missing = asset(Path("../mod.rs".into()), HeaderMap::new()).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let script = asset(Path("app.js".into()), HeaderMap::new()).await;
        assert_eq!(
            script.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }
}
