//! Embedding packbox: run an action from Rust, with a warm pool for repeated runs.
//!
//! `cargo run --example embed -- examples/packs hello.greet_python name=Ada`

use packbox::{Catalog, Engine, Executor, RunRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let packs = args.next().unwrap_or_else(|| "examples/packs".into());
    let action = args.next().unwrap_or_else(|| "hello.greet_python".into());
    let mut request = RunRequest::new(packs, action);
    request.params = args.collect();

    let catalog = Catalog::builtin()?;
    // Everything wrong with the pack or the parameters is said here, before any container.
    let plan = packbox::plan(&catalog, &request)?;
    let executor = Executor::new(Engine::connect().await?, catalog).with_warm_pool(1);
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
