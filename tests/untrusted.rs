//! Untrusted input (issue 16), each finding against the real binary and engine: deep YAML,
//! dotenv injection, secrets printed in other forms, memory while parsing output, reads of
//! devices and FIFOs, and the smaller ones (symlinked packs, `a.yaml` beside `a.yml`, terminal
//! controls, `--json` statuses, `build` with bad packs, lock files).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The limit every deep document here is past.
const NESTED: usize = 200_000;

fn untrusted_packs() -> PathBuf {
    repo_root().join("tests/fixtures")
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A packbox process that finished (or was killed at `deadline`, which fails the test: a hang
/// is what some of these findings were), with its peak resident memory from `wait4`.
struct Watched {
    finished: Finished,
    peak_rss_kib: u64,
}

fn watched(args: &[&str], deadline: Duration) -> Watched {
    watched_command(
        Command::new(env!("CARGO_BIN_EXE_packbox")).args(args),
        deadline,
    )
}

// The child is reaped by `wait4` (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn watched_command(command: &mut Command, deadline: Duration) -> Watched {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("packbox starts");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is this test's own child, not yet reaped; both pointers are valid.
        let reaped = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut rusage) };
        if reaped == pid as i32 {
            break (status, rusage);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "packbox {args:?} still ran after {deadline:?}",
                args = command
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out.join().expect("stdout read"),
        stderr: err.join().expect("stderr read"),
    };
    Watched {
        finished: Finished { output, pid },
        peak_rss_kib: rusage.ru_maxrss as u64,
    }
}

/// `packbox run --packs tests/fixtures untrusted.ACTION --json ARGS`, watched.
fn run_untrusted(action: &str, args: &[&str]) -> Watched {
    let packs = untrusted_packs();
    let action = format!("untrusted.{action}");
    let mut all = vec![
        "run",
        "--packs",
        packs.to_str().expect("utf-8 path"),
        &action,
        "--json",
    ];
    all.extend_from_slice(args);
    watched(&all, Duration::from_secs(300))
}

fn a_pack(dir: &Path, name: &str, action_yaml: &str) -> PathBuf {
    let pack = dir.join(name);
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        format!("ref: {name}\nlabel: L\nversion: 1.0.0\n"),
    )
    .expect("write pack.yaml");
    std::fs::write(pack.join("actions/a.sh"), "echo '{\"ok\": true}'\n").expect("write a.sh");
    std::fs::write(pack.join("actions/a.yaml"), action_yaml).expect("write a.yaml");
    pack
}

#[test]
fn deep_yaml_is_refused_naming_file_and_line_in_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    a_pack(
        &packs,
        "deep",
        &format!("ref: deep.a\nentry_point: a.sh\ntags: {}\n", nested(NESTED)),
    );
    let packs_arg = packs.to_string_lossy().into_owned();
    let expected = "actions/a.yaml:3: nested deeper than 64 levels";
    for args in [
        vec!["pack", "validate", packs_arg.as_str()],
        vec!["actions", "list", "--packs", packs_arg.as_str()],
        vec!["run", "--packs", packs_arg.as_str(), "deep.a"],
    ] {
        let run = watched(&args, Duration::from_secs(60)).finished;
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        let said = format!("{}{}", run.stdout(), run.stderr());
        assert!(said.contains(expected), "{args:?}: {said}");
        assert_no_leftovers(&run);
    }

    // Parameters, secrets and settings files: the same limit, the file and line named.
    a_pack(&packs, "fine", "ref: fine.a\nentry_point: a.sh\n");
    let deep_file = dir.path().join("deep.yaml");
    std::fs::write(&deep_file, format!("a: 1\nb: {}\n", nested(NESTED))).expect("write");
    let deep = deep_file.to_string_lossy().into_owned();
    for (flag, what) in [
        ("--params-file", "parameters file"),
        ("--secrets-file", "secrets file"),
        ("--config", "config file"),
    ] {
        let args = ["run", "--packs", &packs_arg, "fine.a", flag, &deep];
        let run = watched(&args, Duration::from_secs(60)).finished;
        assert_eq!(run.code(), 2, "{flag}: {}", run.stderr());
        assert!(
            run.stderr()
                .contains(&format!("{what} {deep}:2: nested deeper than 64 levels")),
            "{flag}: {}",
            run.stderr()
        );
        assert_eq!(containers_created_by(run.pid, unix_now() - 60), 0);
    }
}

#[test]
fn deep_output_is_not_parsed_and_says_why() {
    require_engine();
    let script = format!(
        "head -c {NESTED} /dev/zero | tr '\\0' '['; head -c {NESTED} /dev/zero | tr '\\0' ']'"
    );
    for format in ["json", "yaml"] {
        let run = run_untrusted(
            &format!("emit_{format}"),
            &["-p", &format!("script={script}")],
        );
        let finished = &run.finished;
        assert_eq!(finished.code(), 0, "{format}: {}", finished.stderr());
        let outcome = finished.json();
        assert_eq!(outcome["result"], Value::Null, "{format}");
        assert!(
            outcome["result_error"]
                .as_str()
                .unwrap_or("")
                .contains("nested deeper than 64 levels"),
            "{format}: {}",
            outcome["result_error"]
        );
        assert_no_leftovers(finished);
    }
}

#[test]
fn dotenv_keys_cannot_smuggle_commands_into_an_action_that_sources_them() {
    require_engine();
    let since = unix_now();
    // The action sources its document: a control run shows it does, and that a safe key works.
    let control = run_untrusted("source_dotenv", &["-p", r#"headers={"x-id": "1"}"#]).finished;
    assert_eq!(control.code(), 0, "{}", control.stderr());
    assert_eq!(control.json()["stdout"], "sourced\n");

    // A key that could start a new line is refused before any container.
    let hostile = r#"headers={"a=$(touch /tmp/pwned; echo PWNED)\nb": 1}"#;
    let run = run_untrusted("source_dotenv", &["-p", hostile]).finished;
    assert_eq!(run.code(), 2, "{hostile}: {}", run.stderr());
    assert!(
        run.stderr().contains("cannot be written as dotenv"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.json()["status"], "invalid");
    assert_eq!(containers_created_by(run.pid, since), 0, "{hostile}");

    // Any other key Attune's formatter accepts is delivered, quoted whole: sourcing it runs
    // nothing (a command that ran would print PWNED on the action's stdout).
    for hostile in [
        r#"headers={"a;echo PWNED;b": 1}"#,
        r#"headers={"inner": {"x`echo PWNED`": 1}}"#,
        r#"headers={"$(echo PWNED)": 1, "x'$(echo PWNED)'": 2}"#,
        r#"headers={"a=1;echo PWNED": 1}"#,
    ] {
        let run = run_untrusted("source_dotenv", &["-p", hostile]).finished;
        assert_eq!(run.code(), 0, "{hostile}: {}", run.stderr());
        assert_eq!(run.json()["stdout"], "sourced\n", "{hostile}");
        assert_no_leftovers(&run);
    }

    let run = run_untrusted("source_dotenv", &["--secret", "evil\nPWNED=1"]).finished;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains(r#"secret name "evil\nPWNED""#),
        "{}",
        run.stderr()
    );
    assert_eq!(containers_created_by(run.pid, since), 0);
}

#[test]
fn secrets_are_scrubbed_in_the_forms_programs_print_them() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secrets.yaml");
    std::fs::write(
        &file,
        "structured: {inner: inner-s3cret-value}\nodd: 'qu\"ote\\back-slash-über'\n",
    )
    .expect("write");
    let run = run_untrusted(
        "print_secret",
        &["--secrets-file", file.to_str().expect("utf-8")],
    )
    .finished;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    let printed = outcome.to_string();
    for leak in [
        "inner-s3cret",
        "back-slash",
        r"\u00fcber",
        "über",
        "slash-\\u00fc",
    ] {
        assert!(!printed.contains(leak), "{leak} leaked: {printed}");
        assert!(!run.stderr().contains(leak), "{leak} leaked on stderr");
    }
    assert_eq!(outcome["result"]["inner"], "***");
    assert_eq!(outcome["result"]["odd"], "***");
    let forms = outcome["result"]["forms"].as_array().expect("forms");
    assert_eq!(forms[0], "***");
    assert_eq!(forms[1], "\"***\"", "ensure_ascii form");
    assert_eq!(forms[2], "\"***\"", "escaped form");
    assert_eq!(forms[3], "{\"k\": \"***\"}");
    assert_eq!(
        outcome["stderr"]
            .as_str()
            .unwrap_or("")
            .matches("***")
            .count(),
        4
    );
}

#[test]
fn follow_output_is_scrubbed_as_it_streams() {
    require_engine();
    let packs = untrusted_packs();
    // The secret arrives in two writes a moment apart: two chunks on the attach stream.
    let script = "printf 'one line\\npre tok'; sleep 1; printf 'en-s3cr3t post\\n'; \
                  printf 'err tok' >&2; sleep 1; printf 'en-s3cr3t\\n' >&2";
    let run = watched(
        &[
            "run",
            "--packs",
            packs.to_str().expect("utf-8"),
            "untrusted.emit",
            "--follow",
            "--secret",
            "token=token-s3cr3t",
            "-p",
            &format!("script={script}"),
        ],
        Duration::from_secs(120),
    )
    .finished;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.stdout(), "one line\npre *** post\n");
    assert!(run.stderr().contains("err ***\n"), "{}", run.stderr());
    assert!(!run.stderr().contains("s3cr3t") && !run.stderr().contains("err tok"));
}

#[test]
fn no_half_secret_stays_where_output_is_cut() {
    require_engine();
    // 97 bytes of filler, then the secret: a 100-byte limit cuts it after `tok`.
    let run = run_untrusted(
        "emit",
        &[
            "--secret",
            "token=token-s3cr3t",
            "--max-output",
            "100",
            "-p",
            "script=head -c 97 /dev/zero | tr '\\0' x; printf token-s3cr3t",
        ],
    )
    .finished;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    assert_eq!(outcome["stdout_truncated"], true);
    assert_eq!(
        outcome["stdout"],
        format!(
            "{}\n\n[OUTPUT TRUNCATED: stdout exceeded size limit]\n",
            "x".repeat(97)
        )
    );
}

#[test]
fn parsing_large_output_keeps_packbox_under_100_mib() {
    require_engine();
    let cases = [
        (
            "emit_jsonl",
            "1M lines of {\"i\":1}",
            "yes '{\"i\":1}' | head -n 1000000",
        ),
        (
            "emit_json",
            "a 10 MB JSON array",
            "printf '['; yes '1,' | head -n 5000000 | tr -d '\\n'; printf '1]'",
        ),
    ];
    for (action, what, script) in cases {
        let run = run_untrusted(action, &["-p", &format!("script={script}")]);
        let outcome = run.finished.json();
        assert_eq!(outcome["status"], "succeeded", "{what}");
        assert_eq!(outcome["stdout_truncated"], false, "{what}: kept whole");
        assert_eq!(outcome["result_truncated"], true, "{what}");
        let kept = outcome["result"].as_array().map_or(0, Vec::len);
        assert!(kept > 10_000, "{what}: the leading items are kept ({kept})");
        println!(
            "{what}: peak RSS {} KiB, {kept} items kept",
            run.peak_rss_kib
        );
        assert!(
            run.peak_rss_kib < 100 * 1024,
            "{what}: packbox peaked at {} KiB",
            run.peak_rss_kib
        );
        assert_no_leftovers(&run.finished);
    }
}

#[test]
fn devices_and_fifos_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    a_pack(&packs, "fine", "ref: fine.a\nentry_point: a.sh\n");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let packs_arg = packs.to_string_lossy().into_owned();
    let fifo_arg = fifo.to_string_lossy().into_owned();
    for (flag, file, found) in [
        ("--params-file", "/dev/zero", "a character device"),
        ("--params-file", fifo_arg.as_str(), "a FIFO"),
        ("--secrets-file", "/dev/zero", "a character device"),
        ("--secrets-file", fifo_arg.as_str(), "a FIFO"),
        ("--config", "/dev/zero", "a character device"),
        ("--config", fifo_arg.as_str(), "a FIFO"),
    ] {
        // Under a 2 GiB address-space limit: reading /dev/zero to its end cannot take the
        // machine with it when this regresses.
        let script = format!(
            "ulimit -v 2097152; exec {} run --packs {packs_arg} fine.a {flag} {file}",
            env!("CARGO_BIN_EXE_packbox")
        );
        let run = watched_command(
            Command::new("sh").args(["-c", &script]),
            Duration::from_secs(30),
        )
        .finished;
        assert_eq!(run.code(), 2, "{flag} {file}: {}", run.stderr());
        assert!(
            run.stderr()
                .contains(&format!("{file}: expected a regular file, found {found}")),
            "{flag} {file}: {}",
            run.stderr()
        );
    }
}

#[test]
fn a_symlinked_pack_folder_is_refused_by_every_command() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = dir.path().join("elsewhere");
    a_pack(&elsewhere, "linked", "ref: linked.a\nentry_point: a.sh\n");
    let packs = dir.path().join("packs");
    std::fs::create_dir(&packs).expect("mkdir");
    std::os::unix::fs::symlink(elsewhere.join("linked"), packs.join("linked")).expect("symlink");
    let packs_arg = packs.to_string_lossy().into_owned();
    let linked = packs.join("linked").to_string_lossy().into_owned();
    for args in [
        vec!["run", "--packs", packs_arg.as_str(), "linked.a"],
        vec!["actions", "list", "--packs", packs_arg.as_str()],
        vec!["pack", "validate", packs_arg.as_str()],
        vec!["pack", "validate", linked.as_str()],
        vec!["build", "--packs", packs_arg.as_str()],
    ] {
        let run = watched(&args, Duration::from_secs(120)).finished;
        assert_eq!(run.code(), 2, "{args:?}: {}{}", run.stdout(), run.stderr());
        let said = format!("{}{}", run.stdout(), run.stderr());
        assert!(
            said.contains("the pack folder is a symlink"),
            "{args:?}: {said}"
        );
        assert!(!run.stdout().contains("linked.a  "), "{args:?}: listed");
        assert_no_leftovers(&run);
    }
}

#[test]
fn an_action_in_both_yaml_and_yml_is_an_error_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = a_pack(dir.path(), "twin", "ref: twin.a\nentry_point: a.sh\n");
    std::fs::write(
        pack.join("actions/a.yml"),
        "ref: twin.a\nentry_point: a.sh\ntimeout_seconds: 5\n",
    )
    .expect("write a.yml");
    let packs_arg = dir.path().to_string_lossy().into_owned();
    for args in [
        vec!["run", "--packs", packs_arg.as_str(), "twin.a"],
        vec!["actions", "list", "--packs", packs_arg.as_str()],
        vec!["pack", "validate", packs_arg.as_str()],
    ] {
        let run = watched(&args, Duration::from_secs(60)).finished;
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        let said = format!("{}{}", run.stdout(), run.stderr());
        assert!(
            said.contains("actions/a.yaml")
                && said.contains("actions/a.yml defines the same action"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn terminal_controls_from_an_action_never_reach_the_terminal() {
    require_engine();
    // U+202E (right-to-left override) and U+009B (8-bit CSI), on both streams and in the error.
    let script = "printf 'a\\u202eb\\u009bc\\n'; printf 'e\\u202ef\\u009bg\\n' >&2; exit 3";
    let packs = untrusted_packs();
    let human = watched(
        &[
            "run",
            "--packs",
            packs.to_str().expect("utf-8"),
            "untrusted.emit",
            "-p",
            &format!("script={script}"),
        ],
        Duration::from_secs(120),
    )
    .finished;
    assert_eq!(human.code(), 1, "{}", human.stderr());
    for control in ["\u{202e}", "\u{9b}"] {
        assert!(
            !human.stderr().contains(control),
            "stderr: {:?}",
            human.stderr()
        );
    }
    let json = run_untrusted("emit", &["-p", &format!("script={script}")]).finished;
    for control in ["\u{202e}", "\u{9b}"] {
        assert!(
            !json.stdout().contains(control),
            "stdout: {:?}",
            json.stdout()
        );
    }
    let outcome = json.json();
    assert_eq!(
        outcome["stdout"], "a\u{202e}b\u{9b}c\n",
        "the JSON means the same"
    );
    assert_eq!(outcome["error"], "e\u{202e}f\u{9b}g");
}

#[test]
fn input_errors_with_json_say_invalid_and_exit_2() {
    let run = watched(
        &[
            "run",
            "--packs",
            untrusted_packs().to_str().expect("utf-8"),
            "untrusted.nope",
            "--json",
        ],
        Duration::from_secs(60),
    )
    .finished;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let object = run.json();
    assert_eq!(object["status"], "invalid");
    assert!(object["error"].as_str().unwrap_or("").contains("`nope`"));
}

#[test]
fn build_builds_the_good_packs_and_reports_the_bad_ones() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    // Sorted first, so a build that stopped at the first bad pack would build nothing.
    let bad = a_pack(dir.path(), "abad", "ref: abad.a\nentry_point: a.sh\n");
    std::fs::write(bad.join("pack.yaml"), "ref: abad\n").expect("break pack.yaml");
    a_pack(dir.path(), "good", "ref: good.a\nentry_point: a.sh\n");
    let run = watched(
        &[
            "build",
            "--packs",
            dir.path().to_str().expect("utf-8"),
            "--json",
        ],
        Duration::from_secs(300),
    )
    .finished;
    assert_eq!(run.code(), 2, "{}{}", run.stdout(), run.stderr());
    let reports: Vec<Value> = run
        .stdout()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "finished")
        .map(|event| event["report"].clone())
        .collect();
    let status_of = |action: &str| {
        reports
            .iter()
            .find(|r| r["action"] == action)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status_of("abad.a"), Some(json!("invalid")), "{reports:?}");
    assert_eq!(
        status_of("good.a"),
        Some(json!("not_needed")),
        "{reports:?}"
    );
}

#[test]
fn environment_builds_leave_no_lock_files() {
    require_engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let packs = dir.path().join("packs");
    let pack = a_pack(
        &packs,
        "locks",
        "ref: locks.a\nrunner_type: python\nentry_point: a.sh\n",
    );
    // No requirement to fetch, but a manifest of its own: a fresh image, built in seconds.
    let marker = format!("# packbox lock-file test {}\n", std::process::id());
    std::fs::write(pack.join("requirements.txt"), marker).expect("write requirements");
    let mut command = Command::new(env!("CARGO_BIN_EXE_packbox"));
    command
        .args(["build", "--packs", packs.to_str().expect("utf-8"), "--json"])
        .env("PACKBOX_STATE_DIR", &state)
        .envs(build_env());
    let run = watched_command(&mut command, Duration::from_secs(600)).finished;
    let image = run
        .stdout()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|event| event["report"]["image"].as_str().map(str::to_string));
    if let Some(image) = &image {
        remove_image(image);
    }
    assert_eq!(run.code(), 0, "{}{}", run.stdout(), run.stderr());
    assert!(image.is_some(), "an image was built: {}", run.stdout());
    let left: Vec<_> = std::fs::read_dir(state.join("locks"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "lock files left behind: {left:?}");
}
