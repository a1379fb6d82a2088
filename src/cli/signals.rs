//! Ctrl-C and SIGTERM: the first asks the run to stop gracefully (its container is stopped and
//! removed, the outcome is `cancelled`); a second one exits at once (the container is then swept
//! by the next packbox start or `packbox gc`).

use std::io::Write;

use packbox::{Catalog, Error, Executor, Settings};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::EXIT_CANCELLED;

/// Connects an executor whose work stops gracefully on the first Ctrl-C or SIGTERM (saying
/// `stopping`), as every command that runs containers or builds wants.
pub async fn executor_stopped_by_signal(
    settings: Settings,
    catalog: Catalog,
    stopping: &'static str,
) -> Result<Executor, Error> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone(), stopping);
    Ok(Executor::connect(settings, catalog)
        .await?
        .with_shutdown(shutdown))
}

/// Cancels `token` on the first SIGINT or SIGTERM, saying `stopping` on stderr; exits on the
/// second.
pub fn cancel_on_signal(token: CancellationToken, stopping: &'static str) {
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for signals: Ctrl-C will not stop the action gracefully");
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round == 0 {
                // Stop first, then say so: a process whose stderr is gone (its supervisor's log
                // pipe closed) must still stop, and `eprintln!` would panic this task there.
                token.cancel();
                let _ = writeln!(std::io::stderr(), "packbox: {stopping} (again to force)");
            } else {
                std::process::exit(i32::from(EXIT_CANCELLED));
            }
        }
    });
}
