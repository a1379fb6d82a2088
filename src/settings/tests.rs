//! The resolver tested end to end: flags, file and environment in every combination, each bound
//! and each refusal with its message.

use std::time::Duration;

use super::bounds::{check_network, check_placement, check_user};
use super::show::without_credentials;
use super::*;
use crate::common::error_text::chain;
use crate::image::env::DEFAULT_BUILD_MEMORY;
use crate::sandbox::SeccompProfile;
use crate::sandbox::isolation::IsolationLevel;

fn layer(yaml: &str) -> SettingsLayer {
    serde_yaml::from_str(yaml).expect("valid layer")
}

fn resolve(flags: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::resolve(
        layer(flags),
        None,
        &Environment::from_pairs(env.iter().copied()),
    )
}

fn with_file(flags: &str, file: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, file).expect("write config");
    Settings::resolve(
        layer(flags),
        Some(&path),
        &Environment::from_pairs(env.iter().copied()),
    )
}

fn source_of(settings: &Settings, key: &str) -> Source {
    settings
        .shown()
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.source)
        .expect("setting shown")
}

#[test]
fn sizes_take_suffixes() {
    assert_eq!(parse_size("512m"), Ok(512 << 20));
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("1024"), Ok(1024));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("99999999999999g").is_err(), "overflow");
}

#[test]
fn the_engine_flag_beats_the_file_which_beats_docker_host() {
    let env = [("DOCKER_HOST", "unix:///run/env.sock")];
    let settings = with_file(
        "engine: unix:///run/flag.sock",
        "engine: tcp://file:2375",
        &env,
    )
    .expect("valid");
    assert_eq!(settings.endpoint.host, "unix:///run/flag.sock");
    assert_eq!(source_of(&settings, "engine"), Source::Flag);
    let settings = with_file("{}", "engine: tcp://file:2375", &env).expect("valid");
    assert_eq!(settings.endpoint.host, "tcp://file:2375");
    assert_eq!(source_of(&settings, "engine"), Source::File);
    assert_eq!(
        settings.pack_delivery,
        PackDelivery::Volume,
        "auto, remote engine"
    );
}

#[test]
fn a_bad_engine_is_the_users_fault_from_a_flag_and_the_setups_from_the_environment() {
    let err = resolve("engine: ssh://builder", &[]).expect_err("ssh");
    assert!(
        err.to_string().starts_with("--engine: `ssh://builder`"),
        "{err}"
    );
    assert!(!err.is_engine_setup());
    let err = resolve("{}", &[("DOCKER_HOST", "ssh://builder")]).expect_err("ssh");
    assert!(err.to_string().starts_with("DOCKER_HOST: "), "{err}");
    assert!(err.is_engine_setup());
}

#[test]
fn pack_delivery_is_chosen_or_asked_for() {
    let settings = resolve("pack_delivery: volume", &[]).expect("valid");
    assert_eq!(settings.pack_delivery, PackDelivery::Volume);
    let settings = resolve(
        "{}",
        &[
            ("PACKBOX_PACK_DELIVERY", "bind"),
            ("DOCKER_HOST", "tcp://h:2375"),
        ],
    )
    .expect("valid");
    assert_eq!(settings.pack_delivery, PackDelivery::Bind);
    let err = resolve("{}", &[("PACKBOX_PACK_DELIVERY", "copy")]).expect_err("bad");
    assert!(
        err.to_string().contains("expected auto, bind or volume"),
        "{err}"
    );
}

#[test]
fn no_settings_is_the_locked_down_default() {
    let settings = resolve("{}", &[]).expect("defaults are valid");
    assert_eq!(settings.sandbox, SandboxPolicy::default());
    assert_eq!(settings.endpoint.host, "unix:///var/run/docker.sock");
    assert_eq!(
        settings.pack_delivery,
        PackDelivery::Bind,
        "auto, local socket"
    );
    assert!(settings.sandbox.weaker_than_default.is_empty());
}

#[test]
fn flags_beat_the_file_which_beats_the_environment() {
    let settings = with_file(
        "sandbox: {pids: 32}",
        "sandbox: {memory: 256m, pids: 64}\nrun: {timeout_seconds: 30}\nstate_dir: /from/file\n",
        &[
            ("PACKBOX_STATE_DIR", "/from/env"),
            ("PACKBOX_CATALOG", "/catalog/env"),
        ],
    )
    .expect("valid");
    assert_eq!(settings.sandbox.pids_limit, 32);
    assert_eq!(source_of(&settings, "sandbox.pids"), Source::Flag);
    assert_eq!(settings.sandbox.memory_bytes, 256 << 20);
    assert_eq!(source_of(&settings, "sandbox.memory"), Source::File);
    assert_eq!(settings.run.timeout, Some(Duration::from_secs(30)));
    assert_eq!(settings.state_dir, PathBuf::from("/from/file"));
    assert_eq!(settings.catalog_dir, Some(PathBuf::from("/catalog/env")));
    assert_eq!(source_of(&settings, "catalog"), Source::Env);
    assert_eq!(source_of(&settings, "sandbox.cpus"), Source::Default);
}

#[test]
fn packs_bring_no_runtimes_unless_the_operator_allows_it() {
    let settings = resolve("{}", &[]).expect("valid");
    assert!(!settings.allow_pack_runtimes);
    assert_eq!(
        source_of(&settings, "build.allow_pack_runtimes"),
        Source::Default
    );
    let settings = resolve("{}", &[("PACKBOX_ALLOW_PACK_RUNTIMES", "1")]).expect("valid");
    assert!(settings.allow_pack_runtimes);
    let settings = resolve("build: {allow_pack_runtimes: true}", &[]).expect("valid");
    assert!(settings.allow_pack_runtimes);
}

#[test]
fn packs_get_no_system_packages_unless_the_operator_allows_it() {
    let settings = resolve("{}", &[]).expect("valid");
    assert!(!settings.allow_system_packages);
    assert_eq!(
        source_of(&settings, "build.allow_system_packages"),
        Source::Default
    );
    let settings = resolve("{}", &[("PACKBOX_ALLOW_SYSTEM_PACKAGES", "1")]).expect("valid");
    assert!(settings.allow_system_packages);
    let settings = resolve("build: {allow_system_packages: true}", &[]).expect("valid");
    assert!(settings.allow_system_packages);
}

#[test]
fn packs_choose_no_package_sources_and_builds_have_a_memory_limit_unless_set() {
    let settings = resolve("{}", &[]).expect("valid");
    assert!(!settings.build.allow_pack_sources);
    assert_eq!(settings.build.memory_bytes, Some(DEFAULT_BUILD_MEMORY));
    for yes in ["1", "true", "YES"] {
        let settings = resolve("{}", &[("PACKBOX_PIP_ALLOW_PACK_SOURCES", yes)]).expect("valid");
        assert!(settings.build.allow_pack_sources, "{yes}");
    }
    let settings = resolve("{}", &[("PACKBOX_PIP_ALLOW_PACK_SOURCES", "maybe")]).expect("valid");
    assert!(!settings.build.allow_pack_sources);
    let settings = resolve("build: {memory: 256m, allow_pack_sources: true}", &[]).expect("valid");
    assert_eq!(settings.build.memory_bytes, Some(256 << 20));
    assert!(settings.build.allow_pack_sources);
    for bad in ["build: {memory: 32m}", "build: {memory: 2g}"] {
        let err = resolve(bad, &[]).expect_err(bad);
        assert!(err.to_string().contains("build.memory"), "{err}");
    }
}

#[test]
fn the_environment_names_the_engine_and_the_build_settings() {
    let settings = resolve(
        "{}",
        &[
            ("DOCKER_HOST", "unix:///run/other.sock"),
            ("PACKBOX_BUILD_CA_BUNDLE", "/ca.pem"),
            (
                "PACKBOX_PIP_INDEX_URL",
                "https://user:pw@pypi.example/simple",
            ),
            ("HTTPS_PROXY", "http://u:secret@proxy:3128"),
        ],
    )
    .expect("valid");
    assert_eq!(settings.endpoint.host, "unix:///run/other.sock");
    assert_eq!(source_of(&settings, "engine"), Source::Env);
    assert_eq!(settings.build.ca_bundle, Some(PathBuf::from("/ca.pem")));
    assert_eq!(
        settings.build.proxies["HTTPS_PROXY"],
        "http://u:secret@proxy:3128"
    );
    let shown = serde_json::to_string(settings.shown()).expect("json");
    assert!(
        !shown.contains("secret") && !shown.contains(":pw@"),
        "{shown}"
    );
    assert!(shown.contains("pypi.example"), "{shown}");
}

#[test]
fn the_state_folder_follows_xdg_then_home() {
    let xdg = resolve("{}", &[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]).expect("ok");
    assert_eq!(xdg.state_dir, PathBuf::from("/xdg/packbox"));
    let home = resolve("{}", &[("HOME", "/home/u")]).expect("ok");
    assert_eq!(
        home.state_dir,
        PathBuf::from("/home/u/.local/state/packbox")
    );
}

#[test]
fn a_config_file_in_the_working_folder_is_never_read() {
    // Only --config, PACKBOX_CONFIG and the user's config folder name a file.
    let env = Environment::from_pairs([("HOME", "/nonexistent-home")]);
    assert_eq!(config_file(None, &env), None);
    let env = Environment::from_pairs([("PACKBOX_CONFIG", "/etc/pb.yaml")]);
    assert_eq!(config_file(None, &env), Some(PathBuf::from("/etc/pb.yaml")));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("packbox")).expect("mkdir");
    std::fs::write(dir.path().join("packbox/config.yaml"), "{}").expect("write");
    let home = dir.path().to_string_lossy().into_owned();
    let env = Environment::from_pairs([("XDG_CONFIG_HOME", home.as_str())]);
    assert_eq!(
        config_file(None, &env),
        Some(dir.path().join("packbox/config.yaml"))
    );
}

#[test]
fn unknown_fields_are_refused() {
    let err = with_file("{}", "sandbox: {memroy: 1g}\n", &[]).expect_err("misspelt");
    assert!(err.to_string().contains("memroy"), "{err}");
    assert!(with_file("{}", "sandbox: {mounts: [/var/run/docker.sock]}\n", &[]).is_err());
}

#[test]
fn weaker_settings_need_an_explicit_allowance() {
    for weaker in [
        "sandbox: {user: '0:0'}",
        "sandbox: {user: '0'}",
        "sandbox: {cap_drop_all: false}",
        "sandbox: {no_new_privileges: false}",
        "sandbox: {read_only_root: false}",
        "sandbox: {network: bridge}",
        "sandbox: {memory: 16g}",
        "sandbox: {pids: 100000}",
        "sandbox: {seccomp: engine-default}",
        "sandbox: {seccomp: unconfined}",
    ] {
        let err = with_file("{}", weaker, &[]).expect_err(weaker);
        assert!(
            matches!(err, SettingsError::Weaker { .. }),
            "{weaker}: {err}"
        );
        assert!(err.to_string().contains("--allow-weaker-sandbox"), "{err}");
        let flag = with_file("sandbox: {allow_weaker: true}", weaker, &[]).expect(weaker);
        assert_eq!(flag.sandbox.weaker_than_default.len(), 1, "{weaker}");
    }
}

#[test]
fn allowing_weaker_in_the_file_reports_what_was_weakened() {
    let settings = with_file(
        "{}",
        "sandbox: {allow_weaker: true, user: '0:0', network: bridge}\n",
        &[],
    )
    .expect("allowed");
    assert_eq!(settings.sandbox.weaker_than_default.len(), 2);
    assert!(
        settings
            .sandbox
            .weaker_than_default
            .iter()
            .any(|w| w.contains("root"))
    );
}

#[test]
fn flags_and_file_share_one_validation() {
    for (flags, file) in [
        (
            "sandbox: {tmp_size: 999999g}",
            "sandbox: {tmp_size: 999999g}",
        ),
        ("sandbox: {tmp_size: 1}", "sandbox: {tmp_size: 1}"),
        ("run: {max_output: 0}", "run: {max_output: 0}"),
        ("sandbox: {cpus: 0.0001}", "sandbox: {cpus: 0.0001}"),
        (
            "sandbox: {user: '4294967295'}",
            "sandbox: {user: '4294967295'}",
        ),
        ("sandbox: {pids: 4294967295}", "sandbox: {pids: 4294967295}"),
        ("sandbox: {network: HOST}", "sandbox: {network: HOST}"),
        ("run: {timeout_seconds: 0}", "run: {timeout_seconds: 0}"),
        ("sandbox: {user: root}", "sandbox: {user: root}"),
    ] {
        let from_flag = resolve(flags, &[]).expect_err(flags).to_string();
        let from_file = with_file("{}", file, &[]).expect_err(file).to_string();
        let strip = |text: &str| text.split_once("): ").map(|(_, m)| m.to_string());
        assert_eq!(strip(&from_flag), strip(&from_file), "{flags}");
        assert!(from_flag.contains("(from the command line)"), "{from_flag}");
        assert!(from_file.contains("(from config file "), "{from_file}");
    }
}

#[test]
fn the_seccomp_setting_names_the_profile() {
    let settings = resolve("{}", &[]).expect("defaults");
    assert_eq!(settings.sandbox.seccomp, SeccompProfile::Packbox);
    let settings = with_file(
        "sandbox: {seccomp: packbox}",
        "sandbox: {seccomp: engine-default}",
        &[],
    )
    .expect("the flag wins");
    assert_eq!(settings.sandbox.seccomp, SeccompProfile::Packbox);
    assert_eq!(source_of(&settings, "sandbox.seccomp"), Source::Flag);
    let allowed = resolve(
        "sandbox: {seccomp: engine-default, allow_weaker: true}",
        &[],
    )
    .expect("allowed");
    assert_eq!(allowed.sandbox.seccomp, SeccompProfile::EngineDefault);
    assert_eq!(
        allowed.sandbox.weaker_than_default,
        ["sandbox.seccomp = engine-default (default packbox)"]
    );
    let err =
        resolve("sandbox: {seccomp: /nonexistent/profile.json}", &[]).expect_err("missing file");
    let text = chain(&err);
    assert!(
        text.contains("sandbox.seccomp (from the command line)"),
        "{text}"
    );
    assert!(
        text.contains("/nonexistent/profile.json: cannot read"),
        "{text}"
    );
}

#[test]
fn isolation_rules_come_from_the_config_file() {
    let settings = with_file(
        "{}",
        "isolation:\n  - {match: \"payments.*\", level: strict}\n",
        &[],
    )
    .expect("valid");
    let (level, _) = settings
        .isolation
        .level_for("payments.charge", IsolationLevel::Standard);
    assert_eq!(level, IsolationLevel::Strict);
    let shown = serde_json::to_string(settings.shown()).expect("json");
    assert!(shown.contains("payments.* -> strict"), "{shown}");
    let err = with_file(
        "{}",
        "isolation:\n  - {match: \"[x\", level: strict}\n",
        &[],
    )
    .expect_err("bad glob");
    assert!(
        err.to_string().contains("isolation (from config file"),
        "{err}"
    );
    let err = with_file(
        "{}",
        "isolation:\n  - {match: \"x.*\", level: loose}\n",
        &[],
    )
    .expect_err("bad level");
    assert!(err.to_string().contains("loose"), "{err}");
}

#[test]
fn networks_are_names_and_never_the_host_or_another_container() {
    assert!(check_network("none").is_ok());
    assert!(check_network("bridge").is_ok());
    assert!(check_network("my-net_1.a").is_ok());
    assert!(check_network("host").is_err());
    assert!(check_network("Host").is_err());
    assert!(check_network("container:abc").is_err());
    assert!(check_network("").is_err());
    assert!(check_network("a b").is_err());
}

#[test]
fn the_backend_is_docker_unless_swarm_is_asked_for() {
    let settings = resolve("{}", &[]).expect("defaults");
    assert_eq!(settings.backend, Backend::Docker);
    assert_eq!(source_of(&settings, "backend"), Source::Default);
    let swarm = with_file("{}", "backend: swarm\nregistry: 127.0.0.1:5000\n", &[])
        .expect("swarm from the file");
    assert_eq!(swarm.backend, Backend::Swarm);
    assert_eq!(swarm.registry.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(source_of(&swarm, "backend"), Source::File);
    let from_env = resolve("{}", &[("PACKBOX_BACKEND", "swarm")]).expect("env");
    assert_eq!(from_env.backend, Backend::Swarm);
    let flag_wins = with_file("backend: docker", "backend: swarm\n", &[]).expect("flag");
    assert_eq!(flag_wins.backend, Backend::Docker);
}

#[test]
fn a_bad_backend_or_registry_is_refused_naming_it() {
    let err = resolve("backend: kubernetes", &[]).expect_err("unknown");
    assert!(
        err.to_string().contains("backend") && err.to_string().contains("kubernetes"),
        "{err}"
    );
    for bad in [
        "http://127.0.0.1:5000",
        "127.0.0.1",
        "host:0",
        "host:99999",
        "a b:5000",
        "host:5000/path",
    ] {
        let err = resolve(&format!("{{backend: swarm, registry: '{bad}'}}"), &[]).expect_err(bad);
        assert!(err.to_string().contains("HOST:PORT"), "{bad}: {err}");
    }
    let err = resolve("{backend: swarm, sandbox: {oci_runtime: runsc}}", &[])
        .expect_err("no OCI runtime per service");
    assert!(
        err.to_string().contains("sandbox.oci_runtime")
            && err.to_string().contains("swarm backend"),
        "{err}"
    );
    let err = resolve("registry: 127.0.0.1:5000", &[]).expect_err("docker backend");
    assert!(err.to_string().contains("only the swarm backend"), "{err}");
    assert!(resolve("{backend: swarm, registry: 'registry.example:443'}", &[]).is_ok());
}

#[test]
fn placement_comes_from_the_flags_or_the_swarm_section_whole() {
    let none = resolve("backend: swarm", &[]).expect("defaults");
    assert!(none.placement.is_empty(), "any node by default");
    let file = with_file(
        "backend: swarm",
        "swarm:\n  placement: ['node.role==worker', 'node.labels.zone != dmz']\n",
        &[],
    )
    .expect("from the file");
    assert_eq!(
        file.placement,
        ["node.role==worker", "node.labels.zone != dmz"]
    );
    assert_eq!(source_of(&file, "swarm.placement"), Source::File);
    let flags = with_file(
        "{backend: swarm, swarm: {placement: ['node.hostname==w2']}}",
        "swarm: {placement: ['node.role==worker', 'engine.labels.ssd==true']}\n",
        &[],
    )
    .expect("the flags' list");
    assert_eq!(
        flags.placement,
        ["node.hostname==w2"],
        "replaced, not merged"
    );
}

#[test]
fn a_bad_placement_is_refused_naming_the_constraint() {
    for (bad, said) in [
        ("node.role=worker", "KEY==VALUE"),
        ("node.colour==blue", "`node.colour` is not a key"),
        ("node.labels.==x", "is not a key"),
        ("node.role==boss", "manager or worker"),
        ("node.hostname==", "is not a value"),
        ("node.hostname==a,b", "is not a value"),
        ("node.labels.zone==x=y", "is not a value"),
    ] {
        let err = resolve(
            &format!("{{backend: swarm, swarm: {{placement: ['{bad}']}}}}"),
            &[],
        )
        .expect_err(bad);
        let text = err.to_string();
        assert!(
            text.contains("swarm.placement") && text.contains(said) && text.contains(bad),
            "{bad}: {text}"
        );
    }
    let err =
        resolve("swarm: {placement: ['node.role==worker']}", &[]).expect_err("docker backend");
    assert!(err.to_string().contains("only the swarm backend"), "{err}");
    for good in [
        "node.id==2ivku8v2gvtg4",
        "node.platform.arch!=s390x",
        "engine.labels.storage==ssd",
        "node.labels.rack==r[1-3]",
        "node.role == Manager",
    ] {
        assert!(check_placement(good).is_ok(), "{good}");
    }
}

#[test]
fn users_are_numeric_and_in_range() {
    assert!(check_user("65534:65534").is_ok());
    assert!(check_user("1000").is_ok());
    assert!(check_user("2147483647").is_ok());
    assert!(check_user("2147483648").is_err());
    assert!(check_user("root").is_err());
    assert!(check_user("1:2:3").is_err());
    assert!(check_user(":1").is_err());
}

#[test]
fn credentials_never_show() {
    assert_eq!(
        without_credentials("https://u:p@host:8080/simple"),
        "https://***@host:8080/simple"
    );
    assert_eq!(without_credentials("https://host/x"), "https://host/x");
    assert_eq!(without_credentials("plain"), "plain");
    // A password holding `/`, a token in the query, a fragment.
    assert_eq!(
        without_credentials("https://user:pa/ss@host/simple"),
        "https://***@host/simple"
    );
    assert_eq!(
        without_credentials("https://host/simple?access_token=s3cr3t&x#frag"),
        "https://host/simple?access_token=***&x#***"
    );
    assert_eq!(
        without_credentials("http://u:p@proxy:3128"),
        "http://***@proxy:3128"
    );
    // An npm scope in the path is no credential.
    assert_eq!(
        without_credentials("https://registry.example/npm/@org/"),
        "https://registry.example/npm/@org/"
    );
}

#[test]
fn serve_settings_come_from_the_serve_section_and_the_environment() {
    let settings = with_file(
        "{}",
        "serve:\n  max_concurrent: 3\n  max_body: 64k\n  warm: {per_kind: 1, idle: 90s}\n  retention: {failed: {max_age: 60d, max_count: 5}}\n",
        &[
            ("PACKBOX_SERVE_LISTEN", "0.0.0.0:9000"),
            ("PACKBOX_PACKS", "/srv/packs"),
            ("PACKBOX_SERVE_TOKEN", "a-token-from-the-environment"),
        ],
    )
    .expect("valid");
    let serve = &settings.serve;
    assert_eq!(serve.max_concurrent, 3);
    assert_eq!(serve.max_body, 64 << 10);
    assert_eq!(serve.warm.per_kind, 1);
    assert_eq!(serve.warm.idle, Duration::from_secs(90));
    assert_eq!(
        serve.retention.failed.max_age,
        Duration::from_secs(60 * 86400)
    );
    assert_eq!(serve.retention.failed.max_count, 5);
    assert_eq!(
        serve.retention.succeeded.max_age,
        serve_defaults::SUCCEEDED_AGE
    );
    assert_eq!(serve.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(serve.packs, Some(PathBuf::from("/srv/packs")));
    assert_eq!(source_of(&settings, "serve.max_concurrent"), Source::File);
    assert_eq!(source_of(&settings, "serve.listen"), Source::Env);
    let shown = serde_json::to_string(settings.shown()).expect("json");
    assert!(!shown.contains("a-token-from-the-environment"), "{shown}");
    assert!(!format!("{settings:?}").contains("a-token-from-the-environment"));
}

#[test]
fn bad_serve_values_name_the_setting_and_what_was_expected() {
    for (file, setting, expected) in [
        ("serve: {listen: 'localhost'}", "serve.listen", "IP:PORT"),
        (
            "serve: {max_concurrent: 0}",
            "serve.max_concurrent",
            "from 1",
        ),
        (
            "serve: {retention: {succeeded: {max_age: soon}}}",
            "serve.retention.succeeded",
            "7d",
        ),
        ("serve: {warm: {total: 100000}}", "serve.warm.total", "1024"),
    ] {
        let err = with_file("{}", file, &[]).expect_err(file).to_string();
        assert!(
            err.contains(setting) && err.contains(expected),
            "{file}: {err}"
        );
    }
    assert!(with_file("{}", "serve: {listne: x}", &[]).is_err());
}

#[test]
fn a_huge_or_nested_config_file_is_refused() {
    let nested = format!("sandbox: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let started = std::time::Instant::now();
    let err = with_file("{}", &nested, &[]).expect_err("too deep");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("config file"), "{err}");
}

#[test]
fn the_artifacts_retention_is_a_duration_of_an_hour_at_least() {
    let default = resolve("{}", &[]).expect("default");
    assert_eq!(
        default.run.artifacts_retention,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
    let set = with_file("{}", "run: {artifacts_retention: 2d}\n", &[]).expect("2d");
    assert_eq!(
        set.run.artifacts_retention,
        std::time::Duration::from_secs(2 * 24 * 3600)
    );
    assert_eq!(source_of(&set, "run.artifacts_retention"), Source::File);
    for (refused, says) in [
        ("10m", "run.artifacts_retention"),
        ("0", "from 1h to 100 years, found 0 seconds"),
        ("soon", "expected a duration such as 90s, 12h, 7d"),
    ] {
        let err = with_file(
            "{}",
            &format!("run: {{artifacts_retention: {refused}}}\n"),
            &[],
        )
        .expect_err(refused);
        assert!(err.to_string().contains(says), "{refused}: {err}");
    }
}
