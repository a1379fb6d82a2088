//! Embedding packbox: run an action from Rust, with a warm pool for repeated runs.
//!
//! `cargo run --example embed -- examples/packs hello.greet_python name=Ada`

use packbox::{Catalog, Executor, RunRequest, Settings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let packs = args.next().unwrap_or_else(|| "examples/packs".into());
    let action = args.next().unwrap_or_else(|| "hello.greet_python".into());
    let mut request = RunRequest::new(packs, action);
    request.params = args.collect();

    // Settings as the command line resolves them: config file, environment, defaults.
    let settings = Settings::from_env()?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    // Everything wrong with the pack or the parameters is said here, before any container.
    let plan = packbox::plan(&settings, &catalog, &request)?;
    let executor = Executor::connect(settings, catalog)
        .await?
        .with_warm_pool(1);
    for _ in 0..3 {
        let outcome = executor.run(&plan, |_| {}).await?;
        println!(
            "{:?} in {} ms: {}",
            outcome.status,
            outcome.duration_ms,
            outcome.result.unwrap_or_default()
        );
    }
    executor.close().await;
    Ok(())
}
