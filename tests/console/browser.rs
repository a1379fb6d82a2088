//! A headless Chromium for the console's tests, driven through chromedriver (WebDriver) with
//! fantoccini. Each test gets its own driver and browser with a fresh profile folder; both are
//! ended when the test ends, also when it fails (the browser's processes are found by that
//! folder, which only they name).
//!
//! The browser is kept off every network but this machine's loopback: no background
//! networking, no component or safe-browsing updates, no QUIC, and every host name resolves to
//! nothing (the tests use 127.0.0.1 only).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The browser Debian installs (scripts/ensure-browser).
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a test waits for something the page must show.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One browser, its driver and its profile.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

/// A free port on loopback for the driver (bound, then released for it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium in a window of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("a profile folder");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (scripts/ensure-browser installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let user_data = profile.path().join("chromium");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"
                .into(),
            "--no-pings".into(),
            "--password-store=basic".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
            format!("--user-data-dir={}", user_data.display()),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            // An alert stays open for the test to find, instead of being dismissed.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let capabilities = capabilities.as_object().cloned().expect("an object");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no browser session from chromedriver at {url}: {e}\n{}",
                        std::fs::read_to_string(profile.path().join("chromedriver.log"))
                            .unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let browser = Browser {
            client,
            driver,
            profile,
        };
        browser
            .client
            .set_window_size(width, height)
            .await
            .expect("the window is sized");
        browser
    }

    /// Opens `url` and waits until the console's script has drawn something.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
        self.until(
            "the console draws",
            "return document.querySelector('main') !== null",
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("the page runs the script: {e}\n{script}"))
    }

    /// Runs `script` until it returns something other than null, false, 0 or "" (at most
    /// [`PATIENCE`]); returns that. `what` names the wait in the failure.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        self.until_with(what, script, vec![]).await
    }

    /// [`Browser::until`] with arguments for the script.
    pub async fn until_with(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.client.execute(script, args.clone()).await;
            if let Ok(value) = &value {
                let done = match value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if done {
                    return value.clone();
                }
            }
            if Instant::now() >= deadline {
                let main = self
                    .client
                    .execute(
                        "return (document.querySelector('main') || document.body).innerText",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                panic!("waited {PATIENCE:?} for {what}: last {value:?}\npage: {main}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the element `css` selects, once there is one.
    pub async fn text_of(&self, css: &str) -> String {
        let value = self
            .until_with(
                &format!("an element {css}"),
                "const e = document.querySelector(arguments[0]); return e && e.textContent !== null ? [e.textContent] : null",
                vec![json!(css)],
            )
            .await;
        value[0].as_str().unwrap_or_default().to_string()
    }

    /// Types `text` into the element `css` selects (after emptying it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("an element {css}: {e}"));
        element.clear().await.expect("the field empties");
        element.send_keys(text).await.expect("the keys are typed");
    }

    /// Clicks the element `css` selects, once there is one.
    pub async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("an element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Whether a JavaScript dialog (alert, confirm, prompt) is open.
    pub async fn dialog_open(&self) -> Option<String> {
        self.client.get_alert_text().await.ok()
    }

    /// Saves a screenshot of the window as `NAME.png` in the test run's screenshot folder;
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let folder = screenshots();
        std::fs::create_dir_all(&folder).expect("the screenshot folder");
        let path = folder.join(format!("{name}.png"));
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }

    /// Ends the session (the driver closes the browser), then the driver.
    pub async fn quit(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        self.end_processes();
    }

    /// Ends the driver and any browser process still running on this test's profile.
    fn end_processes(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let marker = self.profile.path().to_string_lossy().into_owned();
        for pid in processes_naming(&marker) {
            // SAFETY: kill(2) on a process whose command line names this test's own profile
            // folder: a browser process this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end_processes();
    }
}

/// The processes whose command line holds `marker`.
fn processes_naming(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .filter(|pid| *pid != std::process::id() as i32)
        .collect()
}

/// Where the test run writes its screenshots: `target/tmp/console-screenshots`.
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}
