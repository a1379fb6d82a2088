//! Hostile actions: one attack per action of the `hostile` fixture pack. For each, the expected
//! status, packbox answers (the run ends), the host is untouched and nothing is left behind.
//!
//! Every attack runs under the OCI runtime packbox picks by default (crun where the engine
//! offers it), or under `PACKBOX_TEST_OCI_RUNTIME` (scripts/test runs the suite under crun,
//! runc and gVisor's runsc); where gVisor answers differently, the test says so. The runs that
//! show what the engine's default profile would allow (the yardsticks) stay on packbox's
//! default runtime.
//!
//! scripts/test runs the suite on rootful and rootless Podman too (`PACKBOX_TEST_ENGINE`, see
//! `common::engine`). Where the engine drops the resource limits (rootless Podman on cgroup v1),
//! each attack is first shown refused, naming the limits; the attacks that limits contain (the
//! fork bomb, the memory hog) stop there, the others run again with the operator's consent
//! (`--allow-weaker-sandbox`) to show that every other setting holds.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A private copy of the hostile pack, with a host marker beside it that no action may read.
struct Arena {
    _dir: tempfile::TempDir,
    packs: PathBuf,
}

impl Arena {
    fn new() -> Arena {
        let dir = tempfile::tempdir().expect("tempdir");
        let packs = dir.path().join("packs");
        std::fs::create_dir(&packs).expect("mkdir");
        copy_pack(&fixture_root().join("hostile"), &packs);
        std::fs::write(packs.join("host-marker"), "host secret marker").expect("marker");
        Arena { _dir: dir, packs }
    }

    fn run(&self, action: &str) -> (Finished, Value) {
        self.run_with(action, &[])
    }

    /// Runs `hostile.ACTION` with extra flags under the suite's OCI runtime, then checks the
    /// outcome names that runtime, the host and the engine.
    fn run_with(&self, action: &str, args: &[&str]) -> (Finished, Value) {
        let runtime = oci_runtime();
        let mut all: Vec<&str> = runtime
            .as_deref()
            .map(|r| vec!["--oci-runtime", r])
            .unwrap_or_default();
        all.extend_from_slice(args);
        // (A `--config` of this suite allows weaker settings itself.)
        let consented = all.contains(&"--allow-weaker-sandbox") || all.contains(&"--config");
        if engine::drops_limits() && !consented {
            let refused = run_json(&self.packs, &format!("hostile.{action}"), &all);
            engine::assert_refused_for_limits(&refused);
            self.assert_host_untouched();
            all.extend(engine::run_flags());
        }
        let (run, outcome) = self.run_on_default_runtime(action, &all);
        if outcome.get("sandbox").is_some() {
            let expected = match runtime {
                Some(runtime) => serde_json::json!(runtime),
                None => default_oci_runtime(),
            };
            assert_eq!(outcome["sandbox"]["oci_runtime"], expected);
        }
        (run, outcome)
    }

    /// Runs `hostile.ACTION` on packbox's default runtime, whatever the suite's: for the
    /// yardsticks that show what the engine's own defaults allow.
    fn run_on_default_runtime(&self, action: &str, args: &[&str]) -> (Finished, Value) {
        let run = run_json(&self.packs, &format!("hostile.{action}"), args);
        let outcome = run.json();
        assert_no_leftovers(&run);
        self.assert_host_untouched();
        engine::assert_outcome_engine(&outcome);
        (run, outcome)
    }

    /// On an engine that drops resource limits, the attack is refused, and that is all this
    /// test can show: an attack that only limits contain is never run without them.
    fn refused_without_limits(&self, action: &str) -> bool {
        if !engine::drops_limits() {
            return false;
        }
        let refused = run_json(&self.packs, &format!("hostile.{action}"), &[]);
        engine::assert_refused_for_limits(&refused);
        self.assert_host_untouched();
        true
    }

    /// The pack on the host is exactly as copied, and the marker beside it unchanged.
    fn assert_host_untouched(&self) {
        let marker = std::fs::read_to_string(self.packs.join("host-marker")).expect("marker");
        assert_eq!(marker, "host secret marker");
        let pack_files = files_under(&self.packs.join("hostile"));
        let fixture_files = files_under(&fixture_root().join("hostile"));
        assert_eq!(pack_files, fixture_files, "the pack folder changed");
    }
}

/// The OCI runtime the attacks run under: packbox's default, or `PACKBOX_TEST_OCI_RUNTIME`.
fn oci_runtime() -> Option<String> {
    std::env::var("PACKBOX_TEST_OCI_RUNTIME")
        .ok()
        .filter(|runtime| !runtime.is_empty())
}

/// Whether the attacks run under gVisor, whose kernel answers some calls differently.
fn under_gvisor() -> bool {
    oci_runtime().as_deref() == Some("runsc")
}

fn fixture_root() -> PathBuf {
    repo_root().join("tests/fixtures")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn fork_bomb_is_capped_by_the_pids_limit_and_ended_by_the_timeout() {
    require_engine();
    let arena = Arena::new();
    if arena.refused_without_limits("fork_bomb") {
        return;
    }
    let bomb = std::thread::spawn(move || arena.run("fork_bomb"));
    // While the bomb runs, packbox and the engine still serve other runs.
    wait_for_running(&["label=packbox.action=hostile.fork_bomb".to_string()]);
    let other = run_json(&example_packs(), "hello.greet_shell", &[]);
    assert_eq!(
        other.code(),
        0,
        "a run beside the fork bomb: {}",
        other.stderr()
    );
    let (run, outcome) = bomb.join().expect("fork bomb run");
    if under_gvisor() {
        // Each of the action's processes is a host process of gVisor's, counted by the same
        // pids cgroup: when the bomb exhausts it, the whole sandbox stops, before the timeout.
        assert_eq!(outcome["status"], "failed", "{outcome}");
        assert_eq!(outcome["exit_code"], 2, "{outcome}");
        return;
    }
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    assert_eq!(run.code(), 124);
    assert_eq!(outcome["error"], "Execution timed out after 5 seconds");
}

#[test]
fn memory_hog_is_killed_as_oom() {
    require_engine();
    let arena = Arena::new();
    if arena.refused_without_limits("memory_hog") {
        return;
    }
    let (run, outcome) = arena.run("memory_hog");
    assert!(outcome["result"].is_null(), "it never printed its report");
    if (under_gvisor() || engine::is_podman()) && outcome["status"] == "failed" {
        // runsc tells the engine about an OOM kill late or not at all, and Podman 4.3 on this
        // cgroup v1 host never reports one: the kill is certain (SIGKILL, 137, before the
        // report), the cause not reported.
        assert_eq!(outcome["exit_code"], 137, "{outcome}");
        return;
    }
    assert_eq!(outcome["status"], "oom", "{outcome}");
    assert_eq!(run.code(), 137);
}

#[test]
fn filling_tmp_stops_at_the_tmpfs_size() {
    require_engine();
    let (_, outcome) = Arena::new().run("fill_tmp");
    let written = outcome["result"]["written_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let limit = outcome["sandbox"]["tmpfs_tmp_bytes"].as_u64().unwrap_or(0);
    assert!(
        written <= limit,
        "wrote {written} bytes into a {limit}-byte /tmp: {outcome}"
    );
}

#[test]
fn endless_output_is_bounded_and_timed_out() {
    require_engine();
    let (run, outcome) = Arena::new().run("endless_output");
    assert_eq!(outcome["status"], "timeout", "{}", run.stderr());
    assert_eq!(outcome["stdout_truncated"], true);
    assert_eq!(outcome["stderr_truncated"], true);
    let stdout = outcome["stdout"].as_str().unwrap_or("");
    assert!(
        stdout.len() <= (10 << 20) + 100,
        "stdout kept {} bytes",
        stdout.len()
    );
    assert!(stdout.ends_with("[OUTPUT TRUNCATED: stdout exceeded size limit]\n"));
}

#[test]
fn writes_to_pack_and_root_are_refused() {
    require_engine();
    let (_, outcome) = Arena::new().run("write_everywhere");
    let result = outcome["result"].as_object().cloned().unwrap_or_default();
    assert_eq!(result.len(), 5, "{outcome}");
    // gVisor checks permissions before the read-only mount: the action's uid may not write there.
    let refusal = if under_gvisor() {
        "Permission denied"
    } else {
        "Read-only file system"
    };
    for (path, answer) in result {
        let answer = answer.as_str().unwrap_or("");
        assert!(answer.contains(refusal), "{path}: {answer}");
    }
}

#[test]
fn the_network_is_off() {
    require_engine();
    let (_, outcome) = Arena::new().run("network_off");
    let result = &outcome["result"];
    assert_eq!(result["interfaces"], serde_json::json!(["lo"]), "{outcome}");
    assert_ne!(result["connect"], "connected");
    assert_eq!(outcome["sandbox"]["network"], "none");
}

#[test]
fn host_files_and_the_docker_socket_are_out_of_reach() {
    require_engine();
    let (_, outcome) = Arena::new().run("host_files");
    let result = &outcome["result"];
    assert!(
        result["socket"]
            .as_str()
            .unwrap_or("")
            .contains("No such file"),
        "{result}"
    );
    assert_eq!(result["marker"], "", "the host marker must not be readable");
    // A fresh tmpfs: nothing but the run's own artifacts folder, empty (packbox's init makes
    // it, on every engine).
    assert_eq!(
        result["tmp"], "/tmp/artifacts",
        "/tmp starts empty (a fresh tmpfs)"
    );
    let devices = result["devices"].as_str().unwrap_or("");
    for device in ["sda", "vda", "nvme0n1", "mem", "kmsg"] {
        assert!(
            !devices.lines().any(|d| d == device),
            "{device} visible: {devices}"
        );
    }
    let mounts = result["mounts"].as_str().unwrap_or("");
    assert!(!mounts.contains("docker.sock"), "{mounts}");
}

#[test]
fn mount_ptrace_and_raw_sockets_stay_inside_the_container() {
    require_engine();
    let (_, outcome) = Arena::new().run("privileged_calls");
    let result = &outcome["result"];
    assert_ne!(result["mount"]["exit"], 0, "{result}");
    // Without a network, packbox's syscall profile lets only AF_UNIX sockets open (gVisor's
    // filter answers EPERM where the host kernel's answers EAFNOSUPPORT).
    let refusal = if under_gvisor() {
        "Operation not permitted"
    } else {
        "Address family not supported"
    };
    assert!(
        result["raw_socket"]
            .as_str()
            .unwrap_or("")
            .contains(refusal),
        "{result}"
    );
    assert_eq!(result["ptrace_pid1"], "Operation not permitted", "{result}");
    // The PID namespace holds nothing but the container's own processes.
    let pids = result["visible_pids"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(99);
    assert!(
        pids <= 3,
        "only the container's own processes are visible: {result}"
    );
}

#[test]
fn setuid_binaries_grant_no_privileges() {
    require_engine();
    let (_, outcome) = Arena::new().run("setuid");
    let result = &outcome["result"];
    assert_eq!(result["uid"], "65534", "{result}");
    // gVisor's /proc/self/status has no NoNewPrivs line; the flag still reaches runsc's spec.
    let no_new_privs = if under_gvisor() { "" } else { "1" };
    assert_eq!(result["no_new_privs"], no_new_privs);
    assert_eq!(result["cap_eff"], "0000000000000000");
    assert!(
        result["setuid_files"]
            .as_str()
            .unwrap_or("")
            .contains("/usr/bin/mount"),
        "the image does hold setuid binaries: {result}"
    );
    assert!(
        result["mount"]
            .as_str()
            .unwrap_or("")
            .contains("must be superuser"),
        "{result}"
    );
}

#[test]
fn a_secret_is_nowhere_but_on_stdin() {
    require_engine();
    let arena = Arena::new();
    let secret = "hunt-me-5b0c1e9f";
    let (_, outcome) = arena.run_with("secret_hunt", &["--secret", &format!("api_key={secret}")]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(
        outcome["result"]["secret_length"],
        secret.len(),
        "it got the secret"
    );
    assert_eq!(
        outcome["result"]["found"],
        serde_json::json!([]),
        "{outcome}"
    );
}

#[test]
fn ptrace_of_its_own_init_is_refused_and_the_run_ends() {
    require_engine();
    let (run, outcome) = Arena::new().run("ptrace_init");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(run.code(), 0);
    assert_eq!(outcome["result"]["attach"], "EPERM", "{outcome}");
}

#[test]
fn ptrace_of_init_is_refused_even_under_the_engine_default_profile() {
    require_engine();
    // Under the engine's default profile ptrace is allowed, and with the engine's own init the
    // attach would succeed (same uid): init stops and the container outlives its action until
    // the timeout. packbox's init, every engine's PID 1 (Docker and Podman), makes itself
    // non-dumpable, so the kernel refuses the attach whatever the profile.
    let (run, outcome) = Arena::new().run_on_default_runtime(
        "ptrace_init",
        &[
            "--seccomp",
            "engine-default",
            "--allow-weaker-sandbox",
            "--timeout",
            "10",
            "--grace",
            "1",
        ],
    );
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(run.code(), 0);
    assert_eq!(outcome["stdout"], "{\"attach\": \"EPERM\"}\n");
}

/// Every kernel interface `kernel_calls` tries, and the answer packbox's sandbox gives.
const KERNEL_CALL_ANSWERS: [(&str, &str); 23] = [
    ("ptrace_traceme", "EPERM"),
    ("process_vm_readv_child", "EPERM"),
    ("write_proc_sys", "EROFS"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("bpf", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("io_uring_setup", "EPERM"),
    ("unshare_user", "EPERM"),
    ("unshare_mount", "EPERM"),
    ("mount_tmpfs", "EPERM"),
    ("mknod_char_device", "EPERM"),
    ("chroot", "EPERM"),
    ("personality_linux32", "EPERM"),
    ("clock_settime", "EPERM"),
    ("settimeofday", "EPERM"),
    ("init_module", "EPERM"),
    ("finit_module", "EPERM"),
    ("socket_inet", "EAFNOSUPPORT"),
    ("socket_packet", "EAFNOSUPPORT"),
    ("socket_netlink", "EAFNOSUPPORT"),
    ("socket_unix", "ok"),
];

fn assert_kernel_answers(outcome: &Value) {
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let result = &outcome["result"];
    for (call, expected) in KERNEL_CALL_ANSWERS {
        // Where gVisor's kernel answers differently: its filter refuses with EPERM rather than
        // the rule's EAFNOSUPPORT, and
        // its /proc/sys refuses writes by permission (EACCES; EPERM for uid 0).
        let expected: &[&str] = match (call, expected) {
            ("write_proc_sys", _) if under_gvisor() => &["EACCES", "EPERM"],
            (_, "EAFNOSUPPORT") if under_gvisor() => &["EPERM"],
            _ => &[expected],
        };
        let answer = result[call].as_str().unwrap_or("");
        assert!(
            expected.contains(&answer),
            "{call}: {answer}, expected {expected:?}: {result}"
        );
    }
}

#[test]
fn kernel_interfaces_an_action_never_needs_are_refused() {
    require_engine();
    let (_, outcome) = Arena::new().run("kernel_calls");
    assert_eq!(outcome["sandbox"]["seccomp"], "packbox");
    assert_kernel_answers(&outcome);
}

#[test]
fn the_profile_holds_when_the_operator_keeps_capabilities_and_root() {
    require_engine();
    // Docker's default capabilities include CAP_MKNOD, CAP_SYS_CHROOT and CAP_NET_RAW: with them
    // and uid 0, the engine's default profile lets device nodes, chroot and packet sockets
    // through. packbox's profile does not depend on capabilities.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("packbox.yaml");
    std::fs::write(
        &config,
        "sandbox:\n  allow_weaker: true\n  cap_drop_all: false\n  user: \"0\"\n",
    )
    .expect("write");
    let config = config.to_string_lossy().into_owned();
    let arena = Arena::new();
    let (_, outcome) = arena.run_with("kernel_calls", &["--config", &config]);
    assert_eq!(outcome["sandbox"]["cap_drop_all"], false);
    assert_kernel_answers(&outcome);

    let (_, engine_default) = arena.run_on_default_runtime(
        "kernel_calls",
        &["--config", &config, "--seccomp", "engine-default"],
    );
    let result = &engine_default["result"];
    for call in ["chroot", "socket_packet", "ptrace_traceme"] {
        // Podman's default capabilities leave CAP_NET_RAW out: no packet socket even there.
        if call == "socket_packet" && engine::is_podman() {
            continue;
        }
        assert_eq!(result[call], "ok", "{call}: {result}");
    }
    if engine::is_podman() {
        // Podman's default profile (its own, not Docker's) answers mknod of a device otherwise.
        return;
    }
    // Under userns-remap the container's root is an unprivileged user of the host, and the
    // kernel itself refuses device nodes in a user namespace, whatever the profile.
    let expected_mknod = if engine_remaps_users() { "EPERM" } else { "ok" };
    assert_eq!(result["mknod_char_device"], expected_mknod, "{result}");
}

/// Whether the engine the tests talk to runs containers in remapped user namespaces.
fn engine_remaps_users() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{json .SecurityOptions}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("name=userns"))
        .unwrap_or(false)
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_system_call_kills_the_action() {
    require_engine();
    let arena = Arena::new();
    let (run, outcome) = arena.run("compat_syscall");
    if under_gvisor() {
        // gVisor has no 32-bit layer: int 0x80 runs the 64-bit call of that number
        // (102 is getuid there), and no socket is made.
        assert_eq!(outcome["status"], "succeeded", "{outcome}");
        assert_eq!(outcome["result"]["made_socket"], false, "{outcome}");
        return;
    }
    // The yardstick: under the engine's default profile, the 32-bit socketcall makes a socket.
    let (_, engine_default) = arena.run_on_default_runtime(
        "compat_syscall",
        &["--seccomp", "engine-default", "--allow-weaker-sandbox"],
    );
    assert_eq!(
        engine_default["result"]["made_socket"], true,
        "{engine_default}"
    );
    // SIGSYS: 128 + 31.
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert_eq!(outcome["exit_code"], 159, "{outcome}");
    assert_eq!(outcome["stdout"], "", "it printed nothing: {outcome}");
    assert_eq!(run.code(), 1);
}

// Attack pass 3: what a pack author, a secret's sender or a co-tenant of the engine tried, and
// what packbox now does. Each test failed on the code before its fix.

/// A value sent as a secret for a parameter that is not `secret: true` is checked like any
/// value, and never quoted: not on stderr, not in `--json`.
#[test]
fn a_secret_given_for_a_plain_parameter_is_never_quoted_in_an_error() {
    require_engine();
    let arena = Arena::new();
    // Refused before any engine is asked, on every engine alike.
    let (run, outcome) =
        arena.run_on_default_runtime("secret_leaks", &["--secret", "pin=4821-TOPSECRET-PIN"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert_eq!(outcome["status"], "invalid", "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`pin`: ") && error.contains("\"integer\""),
        "{error}"
    );
    assert!(
        error.contains("value not shown: given as a secret"),
        "{error}"
    );
    for text in [run.stdout(), run.stderr()] {
        assert!(!text.contains("TOPSECRET"), "the secret was quoted: {text}");
    }
}

/// Secrets printed as a JSON key, as a JSON number, and a secret property of an object
/// parameter (its default), all leave the parsed result scrubbed, like stdout.
#[test]
fn secrets_as_result_keys_numbers_and_nested_properties_are_scrubbed() {
    require_engine();
    let arena = Arena::new();
    let (run, outcome) = arena.run_with(
        "secret_leaks",
        &[
            "--secret",
            "api_key=KEY-5e1f9a77",
            "--secret",
            "pin_code=48213377",
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let everything = outcome.to_string();
    for secret in ["KEY-5e1f9a77", "48213377", "nested-default-secret"] {
        assert!(!everything.contains(secret), "{secret} left in {outcome}");
    }
    assert_eq!(outcome["result"]["pin"], "***", "{outcome}");
    assert_eq!(outcome["result"]["nested"], "***", "{outcome}");
    assert_eq!(
        outcome["result"]["***"], "the api key as a key",
        "{outcome}"
    );
}

/// `secret: true` on a property inside an object parameter hides that property's default in
/// every listing, where the rest of the default stays visible.
#[test]
fn a_secret_property_of_an_object_parameter_is_never_listed() {
    require_engine();
    let arena = Arena::new();
    let packs = arena.packs.to_string_lossy().into_owned();
    let listed = packbox(&["actions", "list", "--packs", &packs, "--json"], &[]);
    assert_eq!(listed.code(), 0, "{}", listed.stderr());
    assert!(!listed.stdout().contains("nested-default-secret"));
    let human = packbox(&["actions", "list", "--packs", &packs], &[]);
    assert!(!human.stdout().contains("nested-default-secret"));
    assert!(
        human.stdout().contains("\"user\":\"ada\""),
        "{}",
        human.stdout()
    );
    assert!(
        human.stdout().contains("\"password\":\"***\""),
        "{}",
        human.stdout()
    );
}

/// An action that prints a fake `ok:` status line without a newline cannot make packbox's real
/// status line continue it: the status starts a line of its own.
#[test]
fn a_forged_status_line_cannot_precede_the_real_one_on_its_line() {
    require_engine();
    let arena = Arena::new();
    let packs = arena.packs.to_string_lossy().into_owned();
    let run = packbox(
        &flagged(&["run", "--packs", &packs, "hostile.fake_status"]),
        &[],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let stderr = run.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAILED: hostile.fake_status failed")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !(l.starts_with("ok:") && l.contains("FAILED"))),
        "the real status continued the forged line: {stderr}"
    );
    assert_no_leftovers(&run);
}

/// A seccomp profile file that allows what packbox's profile refuses (by name, or 32-bit
/// calls) is weaker than the default: refused unless allowed, and reported when allowed.
#[test]
fn a_seccomp_file_that_allows_ptrace_by_name_counts_as_weaker() {
    require_engine();
    let arena = Arena::new();
    let profile = arena._dir.path().join("lenient.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["ptrace", "unshare", "mount", "bpf"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .expect("write the profile");
    let profile = profile.to_string_lossy().into_owned();
    let (run, outcome) = arena.run_on_default_runtime("setuid", &["--seccomp", &profile]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(error.contains("sandbox.seccomp"), "{error}");
    assert!(
        error.contains("allows bpf, mount, ptrace, unshare"),
        "{error}"
    );
}

/// `config show` never prints a credential held in a URL's query or a password with a `/`.
#[test]
fn config_show_masks_query_tokens_and_passwords_with_slashes() {
    let shown = packbox(
        &["config", "show", "--json"],
        &[
            (
                "PACKBOX_PIP_INDEX_URL",
                "https://build:pa/ss-7c1d@pypi.example/simple?access_token=tok-9a8b7c",
            ),
            (
                "HTTPS_PROXY",
                "http://proxy-user:pr/xy-55aa@proxy.example:3128",
            ),
        ],
    );
    assert_eq!(shown.code(), 0, "{}", shown.stderr());
    let text = shown.stdout();
    for credential in ["pa/ss-7c1d", "tok-9a8b7c", "pr/xy-55aa", "proxy-user"] {
        assert!(!text.contains(credential), "{credential} shown: {text}");
    }
    assert!(
        text.contains("pypi.example/simple?access_token=***"),
        "{text}"
    );
}

/// A server that answers `run --server` with control characters and line breaks in the fields
/// of its status line: the line shows them replaced, on one line.
#[test]
fn a_hostile_servers_record_cannot_drive_the_terminal() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let record = serde_json::json!({
        "id": "x1",
        "action": "hostile.\u{1b}[2Jaction",
        "status": "succeeded\n\u{1b}[32mok: forged line",
        "runtime": "shell\u{1b}]0;pwned\u{7}",
        "runtime_version": "5.2\r\nFAILED: spoofed",
        "stdout": "",
        "stderr": "",
        "exit_code": 0,
        "duration_ms": 1,
    })
    .to_string();
    let server = std::thread::spawn(move || {
        // Two requests: the submission, then the wait for its end.
        for _ in 0..2 {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = format!(
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{record}",
                record.len()
            );
            let _ = reader.get_mut().write_all(answer.as_bytes());
        }
    });
    let run = packbox(
        &["run", "--server", &url, "hostile.anything"],
        &[("PACKBOX_TOKEN", "")],
    );
    let _ = server.join();
    let stderr = run.stderr();
    assert!(
        !stderr.contains(['\u{1b}', '\u{7}', '\r']),
        "control characters reached the terminal: {stderr:?}"
    );
    // A status that is not exactly `succeeded` is no success; what the server sent stays on the
    // one real status line.
    let status: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("FAILED:"))
        .collect();
    assert_eq!(status.len(), 1, "{stderr:?}");
    assert!(status[0].contains("ok: forged line") && status[0].contains("FAILED: spoofed"));
    assert!(!stderr.lines().any(|l| l.starts_with("ok:")), "{stderr:?}");
}

/// A copy of the hostile pack whose content (and so its digest) is this test's own.
fn unique_arena() -> (Arena, String) {
    let arena = Arena::new();
    let token = uuid_like();
    std::fs::write(
        arena.packs.join("hostile/data.txt"),
        format!("pack data {token}\n"),
    )
    .expect("write data.txt");
    (arena, token)
}

/// A fresh random token (no uuid crate in the tests: the kernel's).
fn uuid_like() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a random uuid")
        .trim()
        .to_string()
}

fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

/// Removes the volumes a test made or had packbox make, when it ends.
struct VolumesMade(Vec<String>);

impl Drop for VolumesMade {
    fn drop(&mut self) {
        for volume in &self.0 {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
    }
}

/// A volume under the pack's public name, made first by a co-tenant of the engine (forged
/// labels, other content), is never used as the pack: the run is refused, the secret never
/// reaches the co-tenant's script. packbox's own volume is used; one made by another packbox
/// (another state folder) is used once its content, read back, has the pack's digest.
#[test]
fn a_pre_placed_pack_volume_is_never_used_as_the_pack() {
    require_engine();
    let _volumes = hostile_volumes_lock();
    let (arena, token) = unique_arena();
    let packs = arena.packs.to_string_lossy().into_owned();
    let planned = packbox(
        &flagged(&[
            "run",
            "--packs",
            &packs,
            "hostile.pack_file",
            "--json",
            "--pack-delivery",
            "bind",
        ]),
        &[],
    );
    // Run only for its pack digest (on a remote engine a bound folder is empty and the action
    // fails: the digest is in the outcome all the same).
    let digest = planned.json()["pack_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(digest.len(), 64, "{}", planned.stderr());
    let volume = format!("packbox-pack-hostile-{digest}");
    let _made = VolumesMade(vec![volume.clone()]);

    // The co-tenant's volume: packbox's labels, its own script.
    let planted = arena._dir.path().join("planted");
    std::fs::create_dir_all(planted.join("actions")).expect("mkdir");
    std::fs::write(planted.join("data.txt"), "PLANTED\n").expect("write");
    std::fs::write(planted.join("actions/pack_file.sh"), "echo PLANTED; cat\n").expect("write");
    let labels = [
        "packbox.managed=true",
        "packbox.kind=pack",
        "packbox.pack=hostile",
        &format!("packbox.pack_digest={digest}"),
    ];
    let mut create = vec!["volume", "create"];
    for label in &labels {
        create.extend(["--label", label]);
    }
    create.push(&volume);
    assert!(docker(&create).status.success());
    let mount = format!("{volume}:/pack");
    let filler = docker(&[
        "container",
        "create",
        "-v",
        &mount,
        "packbox/shell:5.2",
        "true",
    ]);
    let filler = String::from_utf8_lossy(&filler.stdout).trim().to_string();
    let source = format!("{}/.", planted.display());
    assert!(
        docker(&["cp", &source, &format!("{filler}:/pack")])
            .status
            .success()
    );
    assert!(docker(&["rm", "-f", &filler]).status.success());

    let secret = format!("volume-secret-{token}");
    let attacked = packbox(
        &flagged(&[
            "run",
            "--packs",
            &packs,
            "hostile.pack_file",
            "--json",
            "--pack-delivery",
            "volume",
            "--secret",
            &format!("token={secret}"),
        ]),
        &[],
    );
    assert_eq!(
        attacked.code(),
        125,
        "{}\n{}",
        attacked.stdout(),
        attacked.stderr()
    );
    assert!(
        !attacked.stdout().contains("PLANTED"),
        "{}",
        attacked.stdout()
    );
    let error = attacked.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(&volume) && error.contains("not filled by packbox"),
        "{error}"
    );
    assert_no_leftovers(&attacked);

    // Without the squatter, packbox fills its own volume and uses it.
    assert!(docker(&["volume", "rm", &volume]).status.success());
    let own = run_json(
        &arena.packs,
        "hostile.pack_file",
        &flagged(&["--pack-delivery", "volume"]),
    );
    assert_eq!(own.code(), 0, "{}", own.stderr());
    assert_eq!(own.json()["stdout"], format!("pack data {token}\n"));
    // Another packbox, with a state folder that never saw it, reads it back and uses it.
    let elsewhere = tempfile::tempdir().expect("another state folder");
    let other = packbox(
        &flagged(&[
            "run",
            "--packs",
            &packs,
            "hostile.pack_file",
            "--json",
            "--pack-delivery",
            "volume",
        ]),
        &[("PACKBOX_STATE_DIR", &elsewhere.path().to_string_lossy())],
    );
    assert_eq!(other.code(), 0, "{}", other.stderr());
    assert_eq!(other.json()["stdout"], format!("pack data {token}\n"));
    assert_no_leftovers(&other);
}

/// A run's arguments with what the test engine needs to run at all (the operator's consent
/// where the engine drops resource limits): for tests of what the limits do not decide.
fn flagged<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(engine::run_flags());
    all
}

/// Held by the tests that make pack volumes of `hostile` and by the one that removes every new
/// one it finds (the symlink race's: its volume's name depends on what the race delivered).
/// Without it that test took the planted volume of the test beside it, whose attacked run then
/// filled a volume of its own and succeeded (seen twice in scripts/test's runc pass, where the
/// hostile suite runs alone and these tests often overlap). A lock file, since nextest runs each
/// test in a process of its own; released when the test's guard drops, after its volumes went.
struct HostileVolumesLock {
    _file: std::fs::File,
}

fn hostile_volumes_lock() -> HostileVolumesLock {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("packbox-tests-hostile-volumes.lock"))
        .expect("the lock file");
    // SAFETY: flock on a descriptor this function owns; the lock goes with the file.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    HostileVolumesLock { _file: file }
}

/// Pack volumes named after this pack, for removal when a test ends.
fn pack_volumes() -> Vec<String> {
    let listed = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=packbox.pack=hostile",
    ]);
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Swaps `target` for a symlink to `secret` each time `trigger` is opened, and back to a
/// regular file (with `original` content) each time `secret` is closed, until `stop`: the
/// pack author's race, timed by inotify on the files packbox opens. Returns how many swaps it
/// made.
fn race_swapper(
    trigger: PathBuf,
    target: PathBuf,
    secret: PathBuf,
    original: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain inotify calls on a descriptor this thread owns; buffers are sized.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let watch = |path: &Path, mask: u32| {
            let c = CString::new(path.as_os_str().as_bytes()).expect("a path");
            // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
            let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
            assert!(wd >= 0, "inotify_add_watch {}", path.display());
            wd
        };
        let on_trigger = watch(&trigger, libc::IN_OPEN);
        let on_secret = watch(&secret, libc::IN_CLOSE_NOWRITE);
        let _ = armed.send(());
        let dir = target.parent().expect("a folder").to_path_buf();
        let mut swaps = 0;
        let mut buffer = [0u8; 4096];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if n <= 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            let mut at = 0usize;
            while at + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                // SAFETY: the kernel wrote whole events; read unaligned from the buffer.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buffer[at..].as_ptr().cast()) };
                at += std::mem::size_of::<libc::inotify_event>() + event.len as usize;
                let link = dir.join(".swap");
                let _ = std::fs::remove_file(&link);
                if event.wd == on_trigger {
                    if std::os::unix::fs::symlink(&secret, &link).is_ok()
                        && std::fs::rename(&link, &target).is_ok()
                    {
                        swaps += 1;
                    }
                } else if event.wd == on_secret && std::fs::write(&link, &original).is_ok() {
                    let _ = std::fs::rename(&link, &target);
                }
            }
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        swaps
    })
}

/// The pack author swaps a listed file for a symlink to a root-only file between packbox's
/// listing and its reading (each time: for the plan's digest and for the volume's fill). The
/// file is opened without following links and checked against the listing, so the run is
/// refused; the root-only file never reaches the volume or the output.
#[test]
fn a_file_swapped_for_a_symlink_while_the_pack_is_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    require_engine();
    let (arena, token) = unique_arena();
    let pack = arena.packs.join("hostile");
    // A large file read before data.txt (files are read in path order): its opening is the
    // signal, and reading it leaves the swap time. Sparse: it takes no disk.
    std::fs::create_dir(pack.join("aaa")).expect("mkdir");
    std::fs::File::create(pack.join("aaa/f0000"))
        .and_then(|f| f.set_len(32 << 20))
        .expect("a sparse file");
    let original = format!("pack data {token}\n");
    let secret = arena._dir.path().join("root-only");
    std::fs::write(
        &secret,
        format!("ROOT-ONLY-SECRET-{token}-{}\n", "s".repeat(64)),
    )
    .expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let _volumes = hostile_volumes_lock();
    let before = pack_volumes();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (armed, ready) = std::sync::mpsc::channel();
    let swapper = race_swapper(
        pack.join("aaa/f0000"),
        pack.join("data.txt"),
        secret.clone(),
        original.clone(),
        stop.clone(),
        armed,
    );
    ready.recv().expect("the swapper watches");
    let run = run_json(
        &arena.packs,
        "hostile.pack_file",
        &["--pack-delivery", "volume"],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    let made: Vec<String> = pack_volumes()
        .into_iter()
        .filter(|v| !before.contains(v))
        .collect();
    let _made = VolumesMade(made);
    assert!(swaps > 0, "the race never started: {}", run.stderr());
    for text in [run.stdout(), run.stderr()] {
        assert!(
            !text.contains("ROOT-ONLY"),
            "the root-only file was delivered: {text}"
        );
    }
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("changed while it was being"), "{error}");
    assert_no_leftovers(&run);
}

/// A packbox in another PID namespace under the same host name (a compose service, a CI job on
/// the host's network, `unshare --pid`) names a pid that means another process here: the
/// start-up sweep of this packbox leaves its live run alone.
#[test]
fn the_sweep_leaves_a_live_run_of_another_pid_namespace_alone() {
    require_engine();
    let arena = Arena::new();
    let packs = arena.packs.to_string_lossy().into_owned();
    let neighbour = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_packbox"))
        .args([
            "run",
            "--packs",
            &packs,
            "hostile.sleeper",
            "--json",
            "-p",
            "seconds=6",
        ])
        .args(engine::run_flags())
        .env("PACKBOX_STATE_DIR", state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare runs packbox");
    let label = "label=packbox.owner_space".to_string();
    let running = wait_for_running(&["label=packbox.action=hostile.sleeper".to_string(), label]);
    // Any packbox command sweeps leftovers at start; gc does it and says what it removed.
    let sweeper = packbox(&["gc", "--json"], &[]);
    assert_eq!(sweeper.code(), 0, "{}", sweeper.stderr());
    let neighbour = neighbour
        .wait_with_output()
        .expect("the neighbour finishes");
    let outcome: Value = serde_json::from_slice(&neighbour.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&neighbour.stderr)
        )
    });
    assert_eq!(
        outcome["status"],
        "succeeded",
        "the sweep killed a live run: {outcome}\nsweep: {}",
        sweeper.stdout()
    );
    assert_eq!(outcome["stdout"], "slept\n");
    assert!(!sweeper.stdout().contains(&running), "{}", sweeper.stdout());
}

/// A run whose container someone else removes (a sweep, `docker rm`) says so, instead of a
/// failure with the kill's exit code.
#[test]
fn a_run_whose_container_is_removed_under_it_says_so() {
    require_engine();
    let arena = Arena::new();
    let packs = arena.packs.to_string_lossy().into_owned();
    let child = spawn_packbox(&flagged(&[
        "run",
        "--packs",
        &packs,
        "hostile.sleeper",
        "--json",
        "-p",
        "seconds=60",
    ]));
    let id = wait_for_running(&[
        "label=packbox.action=hostile.sleeper".to_string(),
        format!("label=packbox.owner_pid={}", child.id()),
    ]);
    assert!(docker(&["rm", "-f", &id]).status.success());
    let finished = child.wait_with_output().expect("packbox finishes");
    let outcome: Value = serde_json::from_slice(&finished.stdout).expect("an outcome");
    assert_eq!(outcome["status"], "error", "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("was removed while the action ran"),
        "{error}"
    );
    assert_eq!(finished.status.code(), Some(125));
}

/// A container named like a pack volume's fill lock, made by a co-tenant of the engine with
/// another host's labels and no volume behind it, does not stall the run for the 5 minutes a
/// real filler elsewhere is waited for: it is named at once as no filler.
#[test]
fn a_squatted_fill_lock_is_named_within_seconds() {
    require_engine();
    let _volumes = hostile_volumes_lock();
    let (arena, _) = unique_arena();
    let packs = arena.packs.to_string_lossy().into_owned();
    let planned = packbox(
        &flagged(&[
            "run",
            "--packs",
            &packs,
            "hostile.pack_file",
            "--json",
            "--pack-delivery",
            "bind",
        ]),
        &[],
    );
    // Run only for its pack digest (on a remote engine a bound folder is empty and the action
    // fails: the digest is in the outcome all the same).
    let digest = planned.json()["pack_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(digest.len(), 64, "{}", planned.stderr());
    let volume = format!("packbox-pack-hostile-{digest}");
    let lock = format!("{volume}-lock");
    let filling = format!("packbox.pack_filling={volume}");
    let squatted = docker(&[
        "container",
        "create",
        "--name",
        &lock,
        "--label",
        "packbox.managed=true",
        "--label",
        "packbox.owner_host=somewhere-else",
        "--label",
        "packbox.owner_pid=1",
        "--label",
        &filling,
        "packbox/shell:5.2",
        "true",
    ]);
    assert!(
        squatted.status.success(),
        "{}",
        String::from_utf8_lossy(&squatted.stderr)
    );
    let started = std::time::Instant::now();
    let run = run_json(
        &arena.packs,
        "hostile.pack_file",
        &flagged(&["--pack-delivery", "volume"]),
    );
    let waited = started.elapsed();
    let _ = docker(&["rm", "-f", &lock]);
    let _made = VolumesMade(vec![volume.clone()]);
    assert_eq!(run.code(), 125, "{}", run.stderr());
    let error = run.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&lock) && error.contains("not a packbox filling"),
        "{error}"
    );
    assert!(
        waited < std::time::Duration::from_secs(60),
        "waited {waited:?}"
    );
}

/// The packs whose dependencies run code while their environment is built.
fn hostile_build_packs() -> PathBuf {
    fixture_root().join("hostile_build")
}

/// The environment tag `packbox explain` names for an action.
fn env_tag(packs: &Path, action: &str, env: &[(&str, &str)]) -> String {
    let packs = packs.to_string_lossy().into_owned();
    let explained = packbox(&["explain", "--packs", &packs, action, "--json"], env);
    assert_eq!(explained.code(), 0, "{}", explained.stderr());
    let report = explained.json();
    report["environment"]["image"]
        .as_str()
        .or_else(|| report["image"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A pack's own code that runs while its environment is built (a `.pth` file in a wheel it
/// ships) runs in the action's sandbox: not root, no capabilities, no-new-privileges, packbox's
/// syscall profile, the build's process limit; the operator's index and proxy credentials reach
/// the installer alone, never that code, the build's log or the image. An image someone else put
/// under the environment's tag (forged labels) is never run: the environment is built again.
#[test]
fn pack_code_at_build_time_gets_the_sandbox_and_never_the_credentials() {
    require_engine();
    let credential = format!("CRED-{}", uuid_like());
    let index = format!("https://builder:{credential}@127.0.0.1:9/simple");
    let proxy = format!("http://proxyuser:{credential}@127.0.0.1:9");
    let mut env = build_env();
    env.push(("PACKBOX_PIP_INDEX_URL", &index));
    env.push(("HTTPS_PROXY", &proxy));
    let packs = hostile_build_packs();
    let packs_arg = packs.to_string_lossy().into_owned();
    let run = packbox(
        &["run", "--packs", &packs_arg, "buildprobe.report", "--json"],
        &env,
    );
    if engine::refuses_builds() {
        // Where a build's network cannot be isolated, no build runs the pack's code.
        engine::assert_build_refused(&run);
        return;
    }
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let outcome = run.json();
    let report = &outcome["result"];
    assert_eq!(report["uid"], 65534, "{report}");
    assert_eq!(report["cap_eff"], "0000000000000000", "{report}");
    assert_eq!(report["no_new_privs"], "1", "{report}");
    assert_eq!(report["seccomp"], "2", "{report}");
    let spawned = report["spawned"].as_u64().unwrap_or(u64::MAX);
    assert!(
        spawned < 512,
        "the build's process limit did not hold: {report}"
    );
    assert_eq!(report["environment"], serde_json::json!({}), "{report}");
    // The build's own network, its only way out the egress proxy.
    assert_eq!(
        report["interfaces"],
        serde_json::json!(["eth0", "lo"]),
        "{report}"
    );
    assert!(!outcome.to_string().contains(&credential));

    let tag = env_tag(&packs, "buildprobe.report", &env);
    assert!(tag.starts_with("packbox/env:"), "{tag}");
    // The credential is part of the environment's key: this image is this test's alone.
    let built = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    let built_id = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(built_id.starts_with("sha256:"), "{tag}");
    cleanup_image(&built_id);
    // Containers made from the image inherit its labels: none may name the build's owner, or
    // every sweep would take them for a dead packbox's leftovers.
    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &built_id,
    ]);
    let labels: Value = serde_json::from_slice(&labels.stdout).expect("labels");
    for owner in ["packbox.owner_pid", "packbox.owner_host"] {
        assert_eq!(
            labels[owner].as_str().unwrap_or(""),
            "",
            "{owner}: {labels}"
        );
    }
    for args in [
        vec!["image", "inspect", tag.as_str()],
        vec!["history", "--no-trunc", tag.as_str()],
    ] {
        let shown = docker(&args);
        assert!(shown.status.success());
        assert!(
            !String::from_utf8_lossy(&shown.stdout).contains(&credential),
            "the credential is in `docker {}`",
            args.join(" ")
        );
    }
    for log in std::fs::read_dir(state_dir().join("builds"))
        .expect("build logs")
        .flatten()
    {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(!text.contains(&credential), "in {}", log.path().display());
    }
    let saved = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {tag} | grep -c -a {credential} || true"
        ))
        .output()
        .expect("docker save");
    assert_eq!(
        String::from_utf8_lossy(&saved.stdout).trim(),
        "0",
        "the credential is in the image's layers"
    );

    // A co-tenant's image under the environment's tag, with packbox's labels.
    let context = tempfile::tempdir().expect("a build context");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM packbox/python:3.11\nUSER root\nRUN mkdir -p /opt/packbox && echo '{\"uid\": \"PLANTED\"}' > /opt/packbox/build-report.json\nLABEL packbox.managed=true packbox.kind=env\nUSER 65534:65534\n",
    )
    .expect("write");
    let context_arg = context.path().to_string_lossy().into_owned();
    let planted = docker(&["build", "-q", "-t", &tag, &context_arg]);
    assert!(
        planted.status.success(),
        "{}",
        String::from_utf8_lossy(&planted.stderr)
    );
    let planted_id = String::from_utf8_lossy(&planted.stdout).trim().to_string();
    cleanup_image(&planted_id);
    let again = packbox(
        &["run", "--packs", &packs_arg, "buildprobe.report", "--json"],
        &env,
    );
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert!(
        !again.stdout().contains("PLANTED"),
        "the planted image ran: {}",
        again.stdout()
    );
    assert_eq!(again.json()["result"]["uid"], 65534, "{}", again.stdout());
    // packbox ran the image it recorded, by id; the planted one keeps the tag, unused.
    let now = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    let now_id = String::from_utf8_lossy(&now.stdout).trim().to_string();
    cleanup_image(&now_id);
}

/// Starts a test's Python server (`program`) in a container named `name` (with `docker run`'s
/// `extra` options) and waits, bounded, until it prints `ready`.
fn start_python_server(name: &str, extra: &[&str], program: &str, listening: &str) {
    let mut args = vec![
        "run",
        "-d",
        "--label",
        "packbox.test=hostile",
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["packbox/python:3.11", "python3", "-u", "-c", program]);
    let started = docker(&args);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    wait_until(listening, std::time::Duration::from_secs(30), || {
        container_log(name).contains("ready")
    });
}

/// What a test's container printed so far.
fn container_log(name: &str) -> String {
    String::from_utf8_lossy(&docker(&["logs", name]).stdout).into_owned()
}

/// A server for one test on a network the test made: it logs every TCP connection on port 9000;
/// removed when dropped.
struct BuildTarget {
    network: String,
    container: String,
}

/// The server's program: one `connection from ADDRESS` line per connection.
const CONNECTION_LOGGER: &str = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 9000))\ns.listen(16)\nprint('ready', flush=True)\nwhile True:\n    c, p = s.accept()\n    print('connection from', p[0], flush=True)\n    c.close()\n";

impl BuildTarget {
    fn start() -> BuildTarget {
        let network = format!("hostile-build-{}", &uuid_like()[..8]);
        let made = docker(&[
            "network",
            "create",
            "--label",
            "packbox.test=hostile",
            &network,
        ]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let target = BuildTarget {
            container: format!("{network}-server"),
            network,
        };
        start_python_server(
            &target.container,
            &["--network", &target.network],
            CONNECTION_LOGGER,
            "the test's server listens",
        );
        target
    }

    fn log(&self) -> String {
        container_log(&self.container)
    }

    fn inspect(&self, format: &str) -> String {
        let shown = docker(&["inspect", "--format", format, &self.container]);
        String::from_utf8_lossy(&shown.stdout).trim().to_string()
    }

    /// The server's address on the test's network.
    fn ip(&self) -> String {
        self.inspect(&format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        ))
    }

    /// The gateway of the test's network: an address of the engine's host.
    fn gateway(&self) -> String {
        let shown = docker(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.network,
        ]);
        String::from_utf8_lossy(&shown.stdout).trim().to_string()
    }
}

impl Drop for BuildTarget {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// An operator's HTTP proxy for one test, in a container on the engine's default network: it
/// logs each `CONNECT` it gets (`CONNECT host:port auth` when it came with the expected
/// `Proxy-Authorization`, else `noauth`) and tunnels it; removed when dropped.
struct OperatorProxy {
    container: String,
}

/// The proxy's program.
const OPERATOR_PROXY: &str = r#"
import os, socket, threading
expected = os.environ['EXPECTED']
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(client):
    head = b''
    while b'\r\n\r\n' not in head:
        data = client.recv(1)
        if not data:
            client.close()
            return
        head += data
    lines = head.decode('latin1').split('\r\n')
    target = lines[0].split()[1]
    auth = [l.split(':', 1)[1].strip() for l in lines if l.lower().startswith('proxy-authorization:')]
    print('CONNECT', target, 'auth' if auth == [expected] else 'noauth', flush=True)
    host, port = target.rsplit(':', 1)
    try:
        upstream = socket.create_connection((host, int(port)), timeout=10)
    except OSError:
        client.sendall(b'HTTP/1.1 502 Bad Gateway\r\n\r\n')
        client.close()
        return
    upstream.settimeout(None)
    client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('0.0.0.0', 3128))
listener.listen(64)
print('ready', flush=True)
while True:
    client, _ = listener.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"#;

impl OperatorProxy {
    /// Started, taking `authorization` as its `Proxy-Authorization` value.
    fn start(authorization: &str) -> OperatorProxy {
        let proxy = OperatorProxy {
            container: format!("hostile-build-proxy-{}", &uuid_like()[..8]),
        };
        start_python_server(
            &proxy.container,
            &["-e", &format!("EXPECTED={authorization}")],
            OPERATOR_PROXY,
            "the operator's proxy listens",
        );
        proxy
    }

    fn log(&self) -> String {
        container_log(&self.container)
    }

    /// Its address on the engine's default network.
    fn ip(&self) -> String {
        let shown = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.container,
        ]);
        String::from_utf8_lossy(&shown.stdout).trim().to_string()
    }
}

impl Drop for OperatorProxy {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
    }
}

/// A pack's npm `preinstall` script, run while its environment is built, tries to reach a
/// server on a network the test made and a listener on the engine's host, straight and through
/// the build's proxy: both fail (no route off the build's network; the egress proxy refuses
/// what it was not granted), while npm installs the pack's dependency from the registry the
/// build was granted, through the operator's own proxy (`HTTPS_PROXY`, with credentials),
/// which packbox's egress proxy chains to. The build's log holds the egress audit; the
/// committed image keeps no proxy setting, and the proxy's credentials are nowhere but in the
/// egress proxy's request to the operator's proxy.
#[test]
fn pack_code_at_build_time_reaches_only_the_granted_registry() {
    require_engine();
    if std::env::var_os("PACKBOX_TEST_OCI_RUNTIME").is_some() {
        // Builds run on the engine's default runtime whatever the suite's (the build's sandbox
        // names none): the suite's first pass covers them.
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_pack(&hostile_build_packs().join("netprobe"), dir.path());
    let packs = dir.path().to_string_lossy().into_owned();
    if engine::refuses_builds() {
        let run = packbox(
            &["run", "--packs", &packs, "netprobe.report", "--json"],
            &build_env(),
        );
        engine::assert_build_refused(&run);
        return;
    }
    let target = BuildTarget::start();
    let host = std::net::TcpListener::bind("0.0.0.0:0").expect("bind on the host");
    host.set_nonblocking(true).expect("nonblocking");
    let host_port = host.local_addr().expect("address").port();
    // The server; the host, by the gateway of the test's network and by the first address of
    // the build's own network (where a network that gives the host an address has it).
    let targets = [
        format!("{}:9000", target.ip()),
        format!("{}:{host_port}", target.gateway()),
        format!("gateway:{host_port}"),
    ];
    let manifest_path = pack.join("package.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("read"))
            .expect("package.json");
    // The targets make the manifest, and so the environment, this test's own.
    manifest["targets"] = serde_json::json!(targets);
    std::fs::write(&manifest_path, manifest.to_string()).expect("write package.json");
    let credential = format!("CRED-{}", uuid_like());
    // base64 of `builder:CREDENTIAL`, as the egress proxy sends it.
    let authorization = {
        let encoded = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s 'builder:{credential}' | base64 -w0"))
            .output()
            .expect("base64");
        format!("Basic {}", String::from_utf8_lossy(&encoded.stdout).trim())
    };
    let operator = OperatorProxy::start(&authorization);
    let operator_url = format!("http://builder:{credential}@{}:3128", operator.ip());
    let mut env = build_env();
    env.push(("HTTPS_PROXY", &operator_url));
    let run = packbox(
        &["run", "--packs", &packs, "netprobe.report", "--json"],
        &env,
    );
    let tag = env_tag(dir.path(), "netprobe.report", &env);
    cleanup_image(&tag);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let report = run.json()["result"].clone();
    assert_eq!(
        report["is_number"], true,
        "installed from the registry: {report}"
    );
    assert_eq!(report["proxy_set"], true, "{report}");
    let mut tried_addresses = Vec::new();
    for destination in &targets {
        let tried = &report["targets"][destination];
        assert!(tried.is_object(), "{destination} not tried: {report}");
        assert_ne!(tried["direct"], "connected", "{destination}: {report}");
        assert_eq!(tried["proxy"], "403", "{destination}: {report}");
        tried_addresses.push(tried["address"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        !target.log().contains("connection from"),
        "the test's server was reached: {}",
        target.log()
    );
    assert!(host.accept().is_err(), "the host's listener was reached");
    // npm's connections went through the operator's proxy, with its credentials; the pack's
    // attempts never got that far.
    let chained = operator.log();
    assert!(
        chained.contains("CONNECT registry.npmjs.org:443 auth"),
        "{chained}"
    );
    assert!(
        !chained.contains("noauth") && !chained.contains(":9000"),
        "{chained}"
    );
    assert!(!run.stdout().contains(&credential) && !run.stderr().contains(&credential));

    // The audit, in the build's log in the state folder.
    let key_prefix = tag.rsplit('-').next().unwrap_or_default().to_string();
    assert_eq!(key_prefix.len(), 24, "{tag}");
    let log = std::fs::read_dir(state_dir().join("builds"))
        .expect("build logs")
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with(&key_prefix))
        .map(|entry| std::fs::read_to_string(entry.path()).expect("read the log"))
        .expect("the build's log");
    assert!(
        !log.contains(&credential),
        "the credential is in the build's log"
    );
    for line in [
        format!(
            "network: packbox's egress proxy only, granting registry.npmjs.org:443 (npm's default registry), through the operator's proxy {}:3128",
            operator.ip()
        ),
        "egress: allowed registry.npmjs.org:443 (tunnel)".to_string(),
        format!(
            "egress: refused {} (tunnel): not granted to this run",
            tried_addresses[0]
        ),
        format!(
            "egress: refused {} (tunnel): not granted to this run",
            tried_addresses[1]
        ),
        format!(
            "egress: refused {} (tunnel): not granted to this run",
            tried_addresses[2]
        ),
        "egress audit: ".to_string(),
    ] {
        assert!(
            log.contains(&line),
            "no `{line}` in the build's log:\n{log}"
        );
    }

    // The committed image keeps no proxy setting, in its configuration or its history.
    for args in [
        vec![
            "image",
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            tag.as_str(),
        ],
        vec!["history", "--no-trunc", tag.as_str()],
    ] {
        let shown = docker(&args);
        assert!(shown.status.success(), "docker {args:?}");
        let text = String::from_utf8_lossy(&shown.stdout).to_ascii_lowercase();
        assert!(!text.contains("proxy"), "docker {args:?}: {text}");
        assert!(
            !text.contains(&credential.to_ascii_lowercase()),
            "docker {args:?}: {text}"
        );
    }
    assert_no_leftovers(&run);
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=packbox.owner_pid={}", run.pid),
    ]);
    assert!(
        String::from_utf8_lossy(&networks.stdout).trim().is_empty(),
        "networks left: {}",
        String::from_utf8_lossy(&networks.stdout)
    );
}

/// The action of that ref anywhere in a listing.
fn find_action<'v>(listing: &'v Value, action: &str) -> Option<&'v Value> {
    match listing {
        Value::Object(map) if map.get("ref").and_then(Value::as_str) == Some(action) => {
            Some(listing)
        }
        Value::Object(map) => map.values().find_map(|v| find_action(v, action)),
        Value::Array(items) => items.iter().find_map(|v| find_action(v, action)),
        _ => None,
    }
}

/// A build cancelled (Ctrl-C) while the pack's code runs leaves nothing: no container, no
/// image, no layer.
#[test]
fn a_cancelled_environment_build_leaves_no_layer() {
    require_engine();
    let images_before = docker(&["images", "-a", "-q", "--no-trunc"]);
    let before: Vec<String> = String::from_utf8_lossy(&images_before.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let packs = hostile_build_packs().to_string_lossy().into_owned();
    let listed = packbox(&["actions", "list", "--packs", &packs, "--json"], &[]);
    let dependency_hash = find_action(&listed.json(), "slowbuild.noop")
        .and_then(|action| {
            action["dependencies"]["dependency_hash"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    assert_eq!(dependency_hash.len(), 64, "{}", listed.stdout());
    if engine::refuses_builds() {
        let refused = packbox(
            &["build", "--packs", &packs, "slowbuild", "--json"],
            &build_env(),
        );
        engine::assert_build_refused(&refused);
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_packbox"))
        .args(["build", "--packs", &packs, "slowbuild"])
        .env("PACKBOX_STATE_DIR", state_dir())
        .envs(build_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("packbox build starts");
    let pid = child.id();
    wait_for_running(&[
        "label=packbox.kind=env-build".to_string(),
        format!("label=packbox.owner_pid={pid}"),
    ]);
    // The pack's code is running now: what it made so far would be the layer left behind.
    std::thread::sleep(std::time::Duration::from_secs(4));
    // SAFETY: sends SIGINT to the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait().expect("packbox ends");
    assert_eq!(status.code(), Some(130));
    assert!(containers_of(pid).is_empty(), "a build container was left");
    let images_after = docker(&["images", "-a", "-q", "--no-trunc"]);
    let left: Vec<String> = String::from_utf8_lossy(&images_after.stdout)
        .lines()
        .filter(|id| !before.iter().any(|b| b == id))
        .filter(|id| {
            let labels = docker(&[
                "image",
                "inspect",
                "--format",
                "{{json .Config.Labels}}",
                id,
            ]);
            let labels = String::from_utf8_lossy(&labels.stdout).into_owned();
            labels.contains(&dependency_hash) || labels.contains(&format!("\"{pid}\""))
        })
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "the cancelled build left layers: {left:?}");
}
