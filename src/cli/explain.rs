//! `packbox explain --packs DIR PACK.ACTION`: the decision a run would take, without running the
//! action: runtime, constraint, every candidate version and why, the environment key and its
//! parts, whether the image exists, and the lock it recorded.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use packbox::{Catalog, Error, Executor, Explanation};
use sha2::{Digest, Sha256};

use super::options::{self, GlobalArgs};
use super::render;

/// Arguments of `packbox explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Folder holding the packs, one sub-folder per pack.
    #[arg(long, env = "PACKBOX_PACKS", value_name = "DIR")]
    packs: PathBuf,
    /// The action, as PACK.ACTION.
    #[arg(value_name = "PACK.ACTION")]
    action: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Explains and renders; exit 0 when a run would find a version, 2 when it would refuse.
pub async fn execute(args: ExplainArgs, global: &GlobalArgs) -> ExitCode {
    match explain(&args, global).await {
        Ok(explanation) => {
            if args.json {
                match serde_json::to_string(&explanation) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: cannot write the explanation: {e}"),
                }
            } else {
                print_explanation(&explanation);
            }
            match explanation.refusal {
                Some(_) => ExitCode::from(super::EXIT_INPUT),
                None => ExitCode::SUCCESS,
            }
        }
        Err(error) => render::report(&error, args.json),
    }
}

async fn explain(args: &ExplainArgs, global: &GlobalArgs) -> Result<Explanation, Error> {
    let settings = options::resolve(global)?;
    let catalog = Catalog::load(settings.catalog_dir.as_deref())?;
    let executor = Executor::connect(settings, catalog).await?;
    let explanation = executor.explain(&args.packs, &args.action).await;
    executor.close().await;
    explanation
}

fn print_explanation(e: &Explanation) {
    let out = |line: String| println!("{}", render::sanitize(&line));
    out(format!(
        "action      {} (runner_type `{}`: runtime {}){}",
        e.action,
        e.runner_type,
        e.runtime,
        if e.enabled {
            ""
        } else {
            ", disabled: runs only with --allow-disabled"
        }
    ));
    out(format!(
        "constraint  {}",
        e.constraint.as_deref().unwrap_or("none")
    ));
    out(format!("rule        {}", e.rule));
    out("candidates".into());
    for c in &e.candidates {
        out(format!(
            "  {} {:<8} {:<10} {:<24} {}",
            if c.taken { "*" } else { " " },
            c.declared,
            c.detected.as_deref().unwrap_or("-"),
            c.image,
            c.why
        ));
    }
    match &e.egress {
        Some(grant) => {
            out(
                "network     egress: a per-run network whose only way out is packbox's proxy"
                    .into(),
            );
            for granted in &grant.destinations {
                out(format!(
                    "  {:<30} granted by {}{}",
                    granted.destination.to_string(),
                    granted.granted_by,
                    granted
                        .declared_by
                        .as_ref()
                        .map(|by| format!(", declared in {by}"))
                        .unwrap_or_default()
                ));
            }
        }
        None => out(format!("network     {}", e.network)),
    }
    if !e.system_packages.is_empty() {
        out(format!("system pkgs {}", e.system_packages.join(" ")));
    }
    if let Some(refusal) = &e.refusal {
        out(format!("refused     {refusal}"));
    }
    if !e.not_honoured.is_empty() {
        out("not honoured (Attune acts on these fields; packbox does not)".into());
        for field in &e.not_honoured {
            out(format!(
                "  {} {}: {}",
                field.file, field.field, field.upstream
            ));
        }
        if let Some(first) = e.not_honoured.first() {
            out(format!("  instead: {}", first.packbox));
        }
    }
    if !e.runtime_not_honoured.is_empty() {
        out(format!(
            "runtime {}: not honoured (its file asks for these; packbox does not do them)",
            e.runtime
        ));
        for note in &e.runtime_not_honoured {
            out(format!("  {note}"));
        }
    }
    let Some(env) = &e.environment else {
        return;
    };
    let state = if env.exists {
        "exists"
    } else {
        "missing: a run builds it"
    };
    if !env.needed {
        out(format!(
            "image       {} (no dependencies for this runtime: the runtime image, {state})",
            env.image
        ));
        return;
    }
    out(format!("image       {} ({state})", env.image));
    if let Some(key) = &env.key {
        out(format!("key         {key}"));
    }
    if let Some(parts) = &env.key_parts {
        let text = |name: &str| parts[name].as_str().unwrap_or("-").to_string();
        out(format!("  base image      {}", text("base_image_id")));
        out(format!(
            "  runtime         {} {}",
            text("runtime"),
            text("version")
        ));
        let recipe = text("install_script");
        out(format!(
            "  recipe          format {}, install script sha256 {}",
            parts["format"],
            &hex::encode(Sha256::digest(recipe.as_bytes()))[..16]
        ));
        out(format!("  dependencies    {}", text("dependencies")));
        // The URLs themselves may hold credentials: `config show` shows them masked.
        for (index, name) in [
            ("pip_index_url_sha256", "pip index"),
            ("npm_registry_sha256", "npm registry"),
        ] {
            if let Some(hash) = parts[index].as_str() {
                out(format!(
                    "  {name:<15} sha256 {}",
                    &hash[..16.min(hash.len())]
                ));
            }
        }
    }
    if let Some(requirements) = env
        .dependencies
        .as_ref()
        .and_then(|d| d["requirements"].as_array())
    {
        for r in requirements {
            out(format!(
                "    {} ({})",
                r["text"].as_str().unwrap_or(""),
                r["source"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(lock) = &env.lock {
        out(format!("lock        {}", lock.file));
        for line in lock.content.lines() {
            out(format!("  {line}"));
        }
    }
}
