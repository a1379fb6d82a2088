//! The root apt step of an environment build: the Debian packages a pack declares
//! (`meta.system_packages`, validated bare names) installed on top of the runtime image, before
//! any file of the pack enters a container. Pure code: the step's command, its apt
//! configuration, its capabilities and what it may reach (the apt sources the runtime image
//! names, never the pack); `build.rs` runs it.

use std::io::Read;

use super::network::{BuildGrant, url_destination};
use crate::egress::policy::{Granted, RunGrant};

/// The capabilities the apt step keeps (every other one is dropped): dpkg sets owners (CHOWN),
/// writes and modes of files it does not own (DAC_OVERRIDE, FOWNER). apt's downloads run as
/// root (`APT::Sandbox::User "root"` in [`config`]), so it needs neither SETUID nor SETGID
/// to drop to `_apt`: a package whose maintainer script switches users fails instead.
pub const CAPABILITIES: [&str; 3] = ["CHOWN", "DAC_OVERRIDE", "FOWNER"];

/// The user the apt step runs as: root, as dpkg must.
pub const USER: &str = "0:0";

/// Where the step's apt configuration (the egress proxy) is written from stdin: the build's
/// private `/tmp`, never committed.
const CONFIG_FILE: &str = "/tmp/packbox-apt.conf";

/// Bytes of `/etc/apt` read from the runtime image to learn its sources.
pub const MAX_APT_FOLDER_BYTES: u64 = 4 << 20;

/// The shell script of the apt step; the package names are its arguments (`"$@"`), never part
/// of the text. Its apt configuration comes on stdin and goes to a file in the private `/tmp`
/// (`APT_CONFIG`): the engine records a committed container's command in the image's history,
/// so nothing there names the build's proxy. The package lists and caches are removed before
/// the image is committed.
pub fn script() -> String {
    format!(
        "set -eu\n\
         cat > {CONFIG_FILE}\n\
         export APT_CONFIG={CONFIG_FILE} DEBIAN_FRONTEND=noninteractive\n\
         apt-get update\n\
         apt-get install -y --no-install-recommends \"$@\" </dev/null\n\
         apt-get clean\n\
         rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin {CONFIG_FILE}\n"
    )
}

/// The apt step's command: the script, then the packages as its arguments. The names are
/// bare Debian package names ([`crate::pack::system_packages`] checked them), so none is an
/// option or a shell word.
pub fn command(packages: &[String]) -> Vec<String> {
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script(),
        "packbox-apt".to_string(),
    ];
    cmd.extend(packages.iter().cloned());
    cmd
}

/// The apt configuration the step reads on stdin: downloads through packbox's egress proxy
/// (`proxy`, `http://IP:PORT`, for http and https sources alike), as root.
pub fn config(proxy: &str) -> Vec<u8> {
    format!(
        "Acquire::http::Proxy \"{proxy}\";\n\
         Acquire::https::Proxy \"{proxy}\";\n\
         APT::Sandbox::User \"root\";\n"
    )
    .into_bytes()
}

/// The apt source files of an archive of the image's `/etc/apt` (entries named `apt/...`):
/// `sources.list` and what `sources.list.d` holds (`*.list`, `*.sources`), with their text.
pub fn source_files(archive: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_string();
        let wanted = name == "apt/sources.list"
            || (name.starts_with("apt/sources.list.d/")
                && (name.ends_with(".list") || name.ends_with(".sources")));
        if !wanted {
            continue;
        }
        let mut text = String::new();
        entry
            .by_ref()
            .take(MAX_APT_FOLDER_BYTES)
            .read_to_string(&mut text)?;
        files.push((format!("/etc/{name}"), text));
    }
    Ok(files)
}

/// What the apt step may reach: the host and port of every `http://` / `https://` URI the
/// image's apt sources name (`deb URI suite ...` lines, `URIs:` fields of `.sources` files),
/// each granted by the file naming it. A source packbox cannot grant (another scheme, an
/// address no grant opens), or no source at all, is an error saying which: the step would
/// fail against it.
pub fn grant(files: &[(String, String)]) -> Result<BuildGrant, String> {
    let mut grant = RunGrant {
        destinations: Vec::new(),
    };
    for (file, text) in files {
        for uri in uris(text) {
            // Local sources need no network.
            if uri.starts_with("file:") || uri.starts_with("copy:") || uri.starts_with("cdrom:") {
                continue;
            }
            let destination = url_destination(&uri).map_err(|why| {
                format!("{file} names the apt source `{uri}`, which packbox cannot grant: {why}")
            })?;
            if !grant
                .destinations
                .iter()
                .any(|g| g.destination == destination)
            {
                grant.destinations.push(Granted {
                    destination,
                    granted_by: format!("the runtime image's {file}"),
                    declared_by: None,
                });
            }
        }
    }
    if grant.destinations.is_empty() {
        return Err("the runtime image names no apt source (/etc/apt/sources.list, /etc/apt/sources.list.d) to install Debian packages from".into());
    }
    Ok(BuildGrant {
        grant,
        refused: Vec::new(),
    })
}

/// The URIs of one sources file, in either format: one-line (`deb [options] URI suite ...`)
/// or deb822 (`URIs: URI ...`).
fn uris(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("deb" | "deb-src") => {
                let mut rest = words.peekable();
                // `[arch=amd64 signed-by=...]`: options, possibly over several words.
                if rest.peek().is_some_and(|w| w.starts_with('[')) {
                    for word in rest.by_ref() {
                        if word.ends_with(']') {
                            break;
                        }
                    }
                }
                if let Some(uri) = rest.next() {
                    found.push(uri.to_string());
                }
            }
            Some(field) if field.eq_ignore_ascii_case("uris:") => {
                found.extend(words.map(str::to_string));
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> Vec<(String, String)> {
        vec![("/etc/apt/sources.list".to_string(), text.to_string())]
    }

    fn granted(text: &str) -> Vec<String> {
        grant(&files(text))
            .expect("granted")
            .grant
            .destinations
            .iter()
            .map(|g| g.destination.to_string())
            .collect()
    }

    #[test]
    fn the_packages_are_arguments_never_script_text() {
        let packages = vec!["jq".to_string(), "libxml2-dev".to_string()];
        let cmd = command(&packages);
        assert_eq!(&cmd[..2], ["/bin/sh", "-c"]);
        assert_eq!(cmd[3], "packbox-apt");
        assert_eq!(&cmd[4..], ["jq", "libxml2-dev"]);
        let script = &cmd[2];
        assert!(!script.contains("jq"), "{script}");
        assert!(script.contains("apt-get install -y --no-install-recommends \"$@\""));
        assert!(script.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(script.contains("rm -rf /var/lib/apt/lists/*"));
        assert!(script.contains("apt-get clean"));
        // The engine records the command in the image's history: no proxy in it.
        assert!(!cmd.join(" ").to_ascii_lowercase().contains("proxy"));
    }

    #[test]
    fn the_proxy_and_the_download_user_come_on_stdin() {
        let config = String::from_utf8(config("http://10.1.2.3:3128")).expect("utf-8");
        assert!(config.contains("Acquire::http::Proxy \"http://10.1.2.3:3128\";"));
        assert!(config.contains("Acquire::https::Proxy \"http://10.1.2.3:3128\";"));
        assert!(config.contains("APT::Sandbox::User \"root\";"));
    }

    #[test]
    fn only_the_capabilities_dpkg_needs_and_no_user_switching() {
        assert_eq!(CAPABILITIES, ["CHOWN", "DAC_OVERRIDE", "FOWNER"]);
        assert!(!CAPABILITIES.contains(&"SETUID") && !CAPABILITIES.contains(&"SETGID"));
        assert_eq!(USER, "0:0");
    }

    #[test]
    fn the_images_sources_are_granted_and_nothing_else() {
        assert_eq!(
            granted("deb http://deb.debian.org/debian bookworm main\n"),
            ["deb.debian.org:80"]
        );
        assert_eq!(
            granted(
                "# a comment http://evil.example/\n\
                 deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror.example:8443/debian trixie main\n\
                 deb-src http://deb.debian.org/debian trixie main\n\
                 deb http://deb.debian.org/debian trixie-updates main\n"
            ),
            ["mirror.example:8443", "deb.debian.org:80"]
        );
        let deb822 = vec![(
            "/etc/apt/sources.list.d/debian.sources".to_string(),
            "Types: deb\nURIs: http://deb.debian.org/debian http://security.debian.org/debian-security\nSuites: trixie\n"
                .to_string(),
        )];
        let hosts: Vec<String> = grant(&deb822)
            .expect("granted")
            .grant
            .destinations
            .iter()
            .map(|g| format!("{} by {}", g.destination, g.granted_by))
            .collect();
        assert_eq!(
            hosts,
            [
                "deb.debian.org:80 by the runtime image's /etc/apt/sources.list.d/debian.sources",
                "security.debian.org:80 by the runtime image's /etc/apt/sources.list.d/debian.sources"
            ]
        );
    }

    #[test]
    fn sources_packbox_cannot_grant_are_refused_naming_the_file() {
        for (text, said) in [
            ("deb ftp://ftp.example/debian bookworm main\n", "`ftp`"),
            (
                "deb mirror+http://m.example/list bookworm main\n",
                "mirror+http",
            ),
            (
                "deb http://127.0.0.1:3142/debian bookworm main\n",
                "127.0.0.1",
            ),
            (
                "deb http://169.254.169.254/debian bookworm main\n",
                "169.254.169.254",
            ),
        ] {
            let err = grant(&files(text)).expect_err(text);
            assert!(err.contains("/etc/apt/sources.list"), "{err}");
            assert!(err.contains(said), "{err}");
        }
        let err = grant(&files("# nothing\n")).expect_err("no source");
        assert!(err.contains("names no apt source"), "{err}");
        assert!(
            grant(&files("deb file:/srv/repo ./\n")).is_err(),
            "local only: nothing to grant"
        );
    }

    #[test]
    fn source_files_are_read_from_the_images_apt_folder() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, text) in [
            (
                "apt/sources.list",
                "deb http://deb.debian.org/debian bookworm main\n",
            ),
            (
                "apt/sources.list.d/extra.list",
                "deb http://a.example/d x main\n",
            ),
            ("apt/sources.list.d/x.sources", "URIs: http://b.example/d\n"),
            (
                "apt/sources.list.d/readme.txt",
                "deb http://c.example/ no\n",
            ),
            ("apt/apt.conf.d/docker-clean", "x"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, name, text.as_bytes())
                .expect("append");
        }
        let archive = builder.into_inner().expect("tar");
        let names: Vec<String> = source_files(&archive)
            .expect("read")
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(
            names,
            [
                "/etc/apt/sources.list",
                "/etc/apt/sources.list.d/extra.list",
                "/etc/apt/sources.list.d/x.sources"
            ]
        );
    }
}
