//! The egress proxy packbox runs in a container of its own: see the library's `egress` module.

fn main() -> std::process::ExitCode {
    packbox::egress_proxy_main()
}
