//! Hostile actions: one attack per action of the `hostile` fixture pack. For each, the expected
//! status, packbox answers (the run ends), the host is untouched and nothing is left behind.
//!
//! With `PACKBOX_TEST_OCI_RUNTIME=runsc` every attack runs under gVisor instead (scripts/test
//! runs the suite both ways); where gVisor answers differently, the test says so. The runs that
//! show what the engine's default profile would allow (the yardsticks) stay on the engine's
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
            assert_eq!(
                outcome["sandbox"]["oci_runtime"],
                serde_json::json!(runtime)
            );
        }
        (run, outcome)
    }

    /// Runs `hostile.ACTION` on the engine's default runtime, whatever the suite's: for the
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

/// The OCI runtime the attacks run under: the engine's default, or `PACKBOX_TEST_OCI_RUNTIME`.
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
    assert_eq!(result["tmp"], "", "/tmp starts empty (a fresh tmpfs)");
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
fn ptrace_of_init_freezes_the_run_under_the_engine_default_profile() {
    require_engine();
    // Why packbox's profile refuses ptrace: with the engine's default profile the attach succeeds,
    // init stops, and the container outlives its action until the timeout.
    let (run, outcome) = Arena::new().run_on_default_runtime(
        "ptrace_init",
        &[
            "--seccomp",
            "engine-default",
            "--allow-weaker-sandbox",
            "--timeout",
            "3",
            "--grace",
            "1",
        ],
    );
    assert_eq!(outcome["status"], "timeout", "{outcome}");
    assert_eq!(run.code(), 124);
    assert_eq!(outcome["stdout"], "{\"attach\": \"attached\"}\n");
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
