//! The web console of `packbox serve` in a real browser: Debian's headless Chromium driven
//! through chromedriver, against a real server running real actions on the engine.
//!
//! Sign-in, a run started from an action's form with its output appearing live, a cancel from
//! the run's page, output that resumes after the connection drops, tokens that read only their
//! own runs, hostile output shown as text with no script run, secrets that never reach the page
//! or its storage, and every page at a desktop and a phone size (screenshots are written to
//! `target/tmp/console-screenshots/`).

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use common::server::*;
use common::*;
use serde_json::{Value, json};

/// An admin token: every scope.
const ADMIN: &str = "admin-token-console-0123456789";
/// Two teams' tokens that may run the console's actions and read only their own runs.
const ALPHA: &str = "alpha-token-console-0123456789";
const BETA: &str = "beta-token-console-01234567890";

const ENTER: &str = "\u{E007}";
const TAB: &str = "\u{E004}";

fn console_packs() -> PathBuf {
    repo_root().join("tests/fixtures/console")
}

/// A server for the console's packs with the three tokens.
fn server(dir: &std::path::Path) -> Server {
    require_engine();
    let tokens = token_file(
        dir,
        &format!(
            "admin:{ADMIN}\n\
             alpha:{ALPHA} run=web.* read=own\n\
             beta:{BETA} run=web.* read=own\n"
        ),
    );
    Server::start(ServerOptions {
        packs: console_packs(),
        args: vec!["--token-file".into(), tokens.display().to_string()],
        ..ServerOptions::default()
    })
}

/// Opens the console at `base` and signs in with `token`, by keyboard (type, Enter).
async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.open(&format!("{base}/")).await;
    browser
        .type_into("#token", &format!("{token}{ENTER}"))
        .await;
    browser
        .until(
            "the executions page after sign-in",
            "return location.hash === '#/executions' && document.querySelector('table.executions') !== null",
        )
        .await;
}

/// Starts `action` through the API; returns the execution's id.
async fn start(api: &Api, action: &str, parameters: Value) -> String {
    let answer = api
        .post(
            "/v1/executions",
            &json!({"action": action, "parameters": parameters}),
        )
        .await;
    assert!(
        answer.status == 201 || answer.status == 202,
        "{}",
        answer.body
    );
    answer.body["id"].as_str().expect("an id").to_string()
}

/// Goes to an execution's page.
async fn open_execution(browser: &Browser, base: &str, id: &str) {
    browser.open(&format!("{base}/#/executions/{id}")).await;
}

/// The text of an output pane.
async fn pane(browser: &Browser, stream: &str) -> String {
    browser.text_of(&format!("#stream-{stream}")).await
}

/// Waits until the output pane of `stream` holds `text`; returns the pane's text.
async fn until_pane_holds(browser: &Browser, stream: &str, text: &str) -> String {
    browser
        .until_with(
            &format!("{stream} to show {text:?}"),
            "const pane = document.getElementById('stream-' + arguments[0]); \
             return pane && pane.textContent.includes(arguments[1]) ? pane.textContent : null",
            vec![json!(stream), json!(text)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the page's status badge says `status`.
async fn until_status(browser: &Browser, status: &str) {
    browser
        .until_with(
            &format!("the status {status}"),
            "const b = document.querySelector('.record-status .badge'); return b && b.textContent === arguments[0]",
            vec![json!(status)],
        )
        .await;
}

/// Asserts that no dialog opened and no script of the page's data ran.
async fn assert_nothing_ran(browser: &Browser) {
    assert_eq!(browser.dialog_open().await, None, "a dialog opened");
    let pwned = browser
        .run(
            "return window.pwned === undefined ? null : String(window.pwned)",
            vec![],
        )
        .await;
    assert_eq!(pwned, Value::Null, "a script from the data ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_in_and_watches_a_run_started_from_a_form_live() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ADMIN));
    let browser = Browser::start(1280, 800).await;

    browser.open(&server.at("/")).await;
    browser.screenshot("sign-in").await;
    browser
        .type_into("#token", "not-a-token-of-this-server-000")
        .await;
    browser.click("form.signin button[type=submit]").await;
    let refused = browser.text_of("form.signin .notice").await;
    assert!(refused.contains("does not know"), "{refused}");
    assert_eq!(
        browser.run("return sessionStorage.length", vec![]).await,
        json!(0),
        "a refused token is not kept"
    );
    sign_in(&browser, &server.url, ADMIN).await;

    // To the action by its link, then its form, sent with Enter from the last field.
    browser.click("nav a[href='#/actions']").await;
    browser.click("a[href='#/actions/web.ticks']").await;
    browser.type_into("form.run [name=count]", "3").await;
    browser.type_into("form.run [name=pause_ms]", "300").await;
    browser
        .type_into("form.run [name=hold_seconds]", &format!("20{ENTER}"))
        .await;
    let id = browser
        .until(
            "the new run's page",
            "const m = location.hash.match(/^#\\/executions\\/(.+)$/); return m ? m[1] : null",
        )
        .await
        .as_str()
        .expect("an id")
        .to_string();

    // The ticks show while the run still holds for 20 s: the output is live, not the record's.
    let shown = until_pane_holds(&browser, "stdout", "tick 3").await;
    let record = api.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(record.body["status"], "running", "{}", record.body);
    assert_eq!(shown, "tick 1\ntick 2\ntick 3\n");
    until_status(&browser, "running").await;
    assert_eq!(browser.text_of(".stream-state").await, "live");
    browser.screenshot("execution-running").await;

    let ended = api.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    until_status(&browser, "succeeded").await;
    assert_eq!(
        until_pane_holds(&browser, "stdout", "done").await,
        ended["stdout"].as_str().unwrap_or_default(),
        "the page shows the output once, as recorded"
    );
    let fields = browser.text_of("dl.fields").await;
    for wanted in ["Exit code0", "Pack version1.0.0", "Started byadmin"] {
        assert!(fields.contains(wanted), "{wanted} in {fields}");
    }
    assert!(browser.text_of(".details").await.contains("Sandbox"));
    assert!(
        !server.log().contains(ADMIN),
        "the token reached the server's log"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_a_long_run_from_its_page() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ALPHA));
    let id = start(
        &api,
        "web.ticks",
        json!({"count": 1, "pause_ms": 0, "hold_seconds": 600}),
    )
    .await;
    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &server.url, ALPHA).await;
    open_execution(&browser, &server.url, &id).await;
    until_pane_holds(&browser, "stdout", "tick 1").await;
    until_status(&browser, "running").await;

    // By keyboard: Enter on the button, then on the confirmation it moves the focus to.
    browser
        .client
        .find(fantoccini::Locator::Css("#cancel"))
        .await
        .expect("a cancel button")
        .send_keys(ENTER)
        .await
        .expect("Enter on cancel");
    let focused = browser
        .until(
            "the confirmation to take the focus",
            "return document.activeElement.id === 'cancel-confirm'",
        )
        .await;
    assert_eq!(focused, json!(true));
    browser
        .client
        .active_element()
        .await
        .expect("the focused element")
        .send_keys(ENTER)
        .await
        .expect("Enter on the confirmation");

    until_status(&browser, "cancelled").await;
    let record = api.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(record["status"], "cancelled", "{record}");
    browser
        .until(
            "the cancel button to go",
            "return document.getElementById('cancel') === null",
        )
        .await;
    assert!(!pane(&browser, "stdout").await.contains("done"));
    browser.screenshot("execution-cancelled").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_resumes_after_the_connection_drops() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ADMIN));
    let relay = proxy::Relay::start(server.url.trim_start_matches("http://").to_string()).await;
    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &relay.url, ADMIN).await;
    // Started once the browser is ready, and long enough (6 s of ticks, then 10 s before `done`)
    // that the connection is dropped while it runs even on a loaded machine.
    let id = start(
        &api,
        "web.ticks",
        json!({"count": 12, "pause_ms": 500, "hold_seconds": 10}),
    )
    .await;
    open_execution(&browser, &relay.url, &id).await;
    until_pane_holds(&browser, "stdout", "tick 2").await;
    let running = api.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(running.body["status"], "running", "{}", running.body);

    assert!(relay.drop_connections() > 0, "the output stream was open");
    let record = api.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let shown = until_pane_holds(&browser, "stdout", "done").await;
    let expected: String = (1..=12)
        .map(|i| format!("tick {i}\n"))
        .chain(["done\n".to_string()])
        .collect();
    assert_eq!(shown, expected, "every line once, in order");
    assert_eq!(record["stdout"], json!(expected));
    let sent = relay.sent().to_ascii_lowercase();
    let resumed = sent
        .split("get /v1/executions/")
        .filter(|request| request.contains("/output http/1.1"))
        .any(|request| request.contains("\r\nlast-event-id: "));
    assert!(resumed, "the console asked again from the last event id");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_reads_its_own_never_sees_another_tokens_runs() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let alpha = Api::new(&server, Some(ALPHA));
    let beta = Api::new(&server, Some(BETA));
    let mut theirs = Vec::new();
    for label in ["alpha-only-marker-1", "alpha-only-marker-2"] {
        theirs.push(start(&alpha, "web.form", json!({"label": label})).await);
    }
    let mine = start(&beta, "web.form", json!({"label": "beta-marker"})).await;
    for id in theirs.iter().chain([&mine]) {
        let api = if id == &mine { &beta } else { &alpha };
        api.wait_final(id, Duration::from_secs(120)).await;
    }

    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &server.url, BETA).await;
    let rows = browser
        .until(
            "beta's run in the list",
            "const rows = [...document.querySelectorAll('table.executions tbody tr[data-id]')]; \
             return rows.length ? rows.map(r => r.dataset.id) : null",
        )
        .await;
    assert_eq!(rows, json!([mine]));
    // Filtered by the action both ran: still only beta's.
    browser
        .open(&format!("{}/#/executions?action=web.form", server.url))
        .await;
    let filtered = browser
        .until(
            "the filtered list",
            "const rows = [...document.querySelectorAll('table.executions tbody tr[data-id]')]; \
             return rows.length ? rows.map(r => r.dataset.id) : null",
        )
        .await;
    assert_eq!(filtered, json!([mine]));
    // By status, through the filter form: none of beta's failed; its one run succeeded.
    browser
        .client
        .find(fantoccini::Locator::Css("#filter-status"))
        .await
        .expect("the status filter")
        .select_by_label("failed")
        .await
        .expect("failed");
    browser.click("form.filters button[type=submit]").await;
    let none = browser
        .until(
            "the list of failed runs",
            "return location.hash.includes('status=failed') && document.querySelector('table.executions td.empty') !== null \
               ? [document.querySelectorAll('table.executions tbody tr[data-id]').length] : null",
        )
        .await;
    assert_eq!(none, json!([0]));
    browser
        .open(&format!(
            "{}/#/executions?action=web.form&status=succeeded",
            server.url
        ))
        .await;
    let succeeded = browser
        .until(
            "the list of succeeded runs",
            "const rows = [...document.querySelectorAll('table.executions tbody tr[data-id]')]; \
             return rows.length ? rows.map(r => r.dataset.id) : null",
        )
        .await;
    assert_eq!(succeeded, json!([mine]));
    for id in &theirs {
        open_execution(&browser, &server.url, id).await;
        let said = browser.text_of("main .notice").await;
        assert!(said.contains("that this token may read"), "{said}");
        let source = browser.client.source().await.expect("the page source");
        assert!(
            !source.contains("alpha-only-marker"),
            "alpha's output shown"
        );
    }
    open_execution(&browser, &server.url, &mine).await;
    until_status(&browser, "succeeded").await;
    let source = browser.client.source().await.expect("the page source");
    assert!(source.contains("beta-marker"));
    assert!(!theirs.iter().any(|id| source.contains(id.as_str())));
    // Load figures need admin; the page says so instead of failing.
    browser.open(&format!("{}/#/health", server.url)).await;
    let load = browser
        .until(
            "the load section",
            "const s = document.querySelector('[aria-labelledby=load-title]'); return s && s.textContent.includes('admin') ? s.textContent : null",
        )
        .await;
    assert!(load.as_str().unwrap_or_default().contains("admin scope"));
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_is_shown_as_text_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ADMIN));

    // The console's answers carry the policy that makes markup from data inert.
    let page = http_client(Duration::from_secs(30))
        .get(server.at("/"))
        .send()
        .await
        .expect("the console's page");
    let headers = page.headers();
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap_or_default();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let body = page.text().await.expect("the page");
    assert!(!body.contains("<script>"), "no inline script");

    let id = start(&api, "web.hostile", json!({})).await;
    api.wait_final(&id, Duration::from_secs(120)).await;
    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &server.url, ADMIN).await;
    open_execution(&browser, &server.url, &id).await;
    until_status(&browser, "succeeded").await;
    for stream in ["stdout", "stderr"] {
        let text = until_pane_holds(&browser, stream, "carriage").await;
        for shown in [
            "<script>window.pwned='script';alert('script')</script>",
            "<img src=x onerror=\"window.pwned='img';alert('img')\">",
            "plain \u{241B}[31mRED\u{241B}[0m and \u{241B}]0;retitled\u{2407} title and \u{241B}[2J clear",
            "right-to-left <U+202E>override<U+202C> end",
            "carriage\u{240D}return",
        ] {
            assert!(text.contains(shown), "{stream} shows {shown:?} in {text:?}");
        }
    }
    let elements = browser
        .run(
            "return document.querySelectorAll('main img, main script, main b, main [onerror]').length",
            vec![],
        )
        .await;
    assert_eq!(elements, json!(0), "markup from the output became elements");
    browser.screenshot("execution-hostile").await;
    assert!(
        browser
            .client
            .title()
            .await
            .expect("a title")
            .starts_with("Execution"),
        "the title was not changed by an escape"
    );
    assert_nothing_ran(&browser).await;

    // A pack's own words (descriptions, defaults) are text too.
    browser
        .open(&format!("{}/#/actions/web.hostile", server.url))
        .await;
    let lead = browser.text_of("p.lead").await;
    assert!(lead.contains("<img src=x onerror="), "{lead}");
    let help = browser.text_of("form.run .help").await;
    assert!(help.contains("<script>window.pwned='parameter'"), "{help}");
    let default = browser
        .run(
            "return document.querySelector('form.run [name=note]').value",
            vec![],
        )
        .await;
    assert_eq!(
        default,
        json!("<b onmouseover=\"alert('default')\">default</b>")
    );
    assert_eq!(
        browser
            .run(
                "return document.querySelectorAll('main img, main script, main b').length",
                vec![]
            )
            .await,
        json!(0)
    );
    assert_nothing_ran(&browser).await;

    // Even a mistake in the console could not turn a string into markup: the browser enforces
    // Trusted Types on the page.
    let refused = browser
        .run(
            "try { document.createElement('div').innerHTML = '<b>x</b>'; return 'assigned'; } \
             catch (e) { return e.name; }",
            vec![],
        )
        .await;
    assert_eq!(refused, json!("TypeError"));
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_parameter_never_reaches_the_page_or_its_storage() {
    const SECRET: &str = "s3cret-console-value-7f2a9c";
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ADMIN));
    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &server.url, ADMIN).await;
    browser
        .open(&format!("{}/#/actions/web.form", server.url))
        .await;

    // The form is drawn once the page has the action from the API: wait for it.
    let kind = browser
        .until(
            "the secret's field",
            "const f = document.querySelector('form.run [name=api_key]'); return f ? f.type : null",
        )
        .await;
    assert_eq!(kind, json!("password"));
    browser
        .type_into("form.run [name=label]", "from the form")
        .await;
    browser.type_into("form.run [name=count]", "7").await;
    browser.type_into("form.run [name=ratio]", "0.25").await;
    browser.click("form.run [name=loud]").await;
    browser
        .client
        .find(fantoccini::Locator::Css("form.run [name=color]"))
        .await
        .expect("the enum's list")
        .select_by_label("blue")
        .await
        .expect("blue");
    browser
        .type_into("form.run [name=tags]", "[\"a\", \"b\"]")
        .await;
    browser
        .type_into("form.run [name=extra]", "{\"k\": 1}")
        .await;
    browser.type_into("form.run [name=api_key]", SECRET).await;
    browser.screenshot("action-form").await;
    let typed = browser.client.source().await.expect("the page source");
    assert!(
        !typed.contains(SECRET),
        "the typed secret is in the page source"
    );
    assert_no_secret_kept(&browser, SECRET).await;

    browser.click("form.run button[type=submit]").await;
    let id = browser
        .until(
            "the new run's page",
            "const m = location.hash.match(/^#\\/executions\\/(.+)$/); return m ? m[1] : null",
        )
        .await
        .as_str()
        .expect("an id")
        .to_string();
    until_status(&browser, "succeeded").await;
    let record = api.get(&format!("/v1/executions/{id}")).await.body;
    assert_eq!(
        record["result"]["types"],
        json!({"label": "string", "count": "number", "ratio": "number", "loud": "boolean",
               "color": "string", "tags": "array", "extra": "object", "api_key": "string"}),
        "{record}"
    );
    assert_eq!(record["result"]["received"]["count"], 7);
    assert_eq!(record["result"]["received"]["color"], "blue");
    assert_eq!(record["result"]["received"]["loud"], true);
    until_pane_holds(&browser, "stderr", "api_key is").await;
    let keys = browser.text_of(".details").await;
    assert!(
        keys.contains("Keys received") && keys.contains("api_key"),
        "{keys}"
    );
    let source = browser.client.source().await.expect("the page source");
    assert!(!source.contains(SECRET), "the secret is in the page source");
    assert_no_secret_kept(&browser, SECRET).await;
    browser.screenshot("execution").await;

    // Back on the form: nothing of it was kept.
    browser.client.back().await.expect("back");
    let again = browser
        .until(
            "the form again",
            "const f = document.querySelector('form.run [name=api_key]'); return f ? [f.value] : null",
        )
        .await;
    assert_eq!(again, json!([""]));
    assert!(!server.log().contains(SECRET));
    browser.quit().await;
}

/// Asserts that `secret` is in none of the browser's storage, cookies or address.
async fn assert_no_secret_kept(browser: &Browser, secret: &str) {
    let kept = browser
        .run(
            "const all = []; \
             for (const s of [sessionStorage, localStorage]) \
               for (let i = 0; i < s.length; i++) all.push(s.key(i), s.getItem(s.key(i))); \
             all.push(document.cookie, location.href, history.state === null ? '' : JSON.stringify(history.state)); \
             return all.join('\\n');",
            vec![],
        )
        .await;
    let kept = kept.as_str().unwrap_or_default();
    assert!(!kept.contains(secret), "kept by the browser: {kept}");
    let names: Vec<String> = browser
        .run(
            "return (async () => (await caches.keys()).concat((await indexedDB.databases()).map(d => d.name)))()",
            vec![],
        )
        .await
        .as_array()
        .map(|a| a.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    assert!(
        names.is_empty(),
        "the console made caches or databases: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_reads_at_a_desktop_and_a_phone_size() {
    let dir = tempfile::tempdir().expect("a folder");
    let server = server(dir.path());
    let api = Api::new(&server, Some(ADMIN));
    let done = start(
        &api,
        "web.ticks",
        json!({"count": 5, "pause_ms": 0, "hold_seconds": 0}),
    )
    .await;
    api.wait_final(&done, Duration::from_secs(120)).await;
    let running = start(
        &api,
        "web.ticks",
        json!({"count": 2, "pause_ms": 0, "hold_seconds": 600}),
    )
    .await;
    let browser = Browser::start(1280, 800).await;
    sign_in(&browser, &server.url, ADMIN).await;

    let pages = [
        (
            "executions",
            "#/executions".to_string(),
            "table.executions tbody tr[data-id]",
        ),
        (
            "execution-succeeded",
            format!("#/executions/{done}"),
            ".record-status .badge",
        ),
        ("actions", "#/actions".to_string(), ".cards .card"),
        ("action", "#/actions/web.form".to_string(), "form.run"),
        ("runtimes", "#/runtimes".to_string(), "table tbody tr"),
        ("health", "#/health".to_string(), ".figures"),
    ];
    for (size, width, height) in [("desktop", 1280, 800), ("phone", 390, 844)] {
        browser
            .client
            .set_window_size(width, height)
            .await
            .expect("the window is sized");
        for (name, hash, ready) in &pages {
            browser.open(&format!("{}/{hash}", server.url)).await;
            browser
                .until_with(
                    &format!("{name} to draw"),
                    "return document.querySelector(arguments[0]) !== null",
                    vec![json!(ready)],
                )
                .await;
            let overflow = browser
                .run(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                    vec![],
                )
                .await;
            assert_eq!(overflow, json!(0), "{name} is wider than a {size} window");
            browser.screenshot(&format!("{name}-{size}")).await;
        }
    }
    // Keyboard: the first Tab reaches the skip link; every control has a name and none jumps
    // the tab order.
    browser
        .client
        .set_window_size(1280, 800)
        .await
        .expect("sized");
    browser
        .open(&format!("{}/#/executions/{running}", server.url))
        .await;
    until_status(&browser, "running").await;
    browser.screenshot("execution-running-desktop").await;
    // Moving to another page puts the focus on its heading, so a screen reader says where it is.
    let focused = browser
        .until(
            "the focus on the page's heading",
            "return document.activeElement.tagName === 'H1' && document.activeElement.closest('main') !== null",
        )
        .await;
    assert_eq!(focused, json!(true));
    // A page loaded afresh: the first Tab reaches the skip link, Enter on it moves the focus to
    // the content and leaves the address as it was.
    browser
        .client
        .refresh()
        .await
        .expect("the page loads again");
    until_status(&browser, "running").await;
    browser
        .client
        .find(fantoccini::Locator::Css("body"))
        .await
        .expect("the body")
        .send_keys(TAB)
        .await
        .expect("Tab");
    let first = browser
        .run("return document.activeElement.textContent", vec![])
        .await;
    assert_eq!(first, json!("Skip to content"));
    browser
        .client
        .active_element()
        .await
        .expect("the skip link")
        .send_keys(ENTER)
        .await
        .expect("Enter on the skip link");
    let landed = browser
        .run("return [document.activeElement.id, location.hash]", vec![])
        .await;
    assert_eq!(landed, json!(["main", format!("#/executions/{running}")]));
    let unnamed = browser
        .run(
            "return [...document.querySelectorAll('a, button, input, select, textarea, [tabindex]')] \
               .filter(e => e.tabIndex > 0 || (e.tagName !== 'MAIN' && e.tagName !== 'H1' && e.tagName !== 'PRE' \
                 && !(e.textContent.trim() || e.labels?.length || e.getAttribute('aria-label')))) \
               .map(e => e.outerHTML.slice(0, 80))",
            vec![],
        )
        .await;
    assert_eq!(unnamed, json!([]));
    api.post(&format!("/v1/executions/{running}/cancel"), &json!({}))
        .await;
    browser.quit().await;
}
