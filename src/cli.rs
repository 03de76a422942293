//! Command-line arguments (declarative only; `main.rs` acts on them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// llmgate: a self-hosted, OpenAI-compatible chat-completions gateway.
#[derive(Debug, Parser)]
#[command(name = "llmgate", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (on the embedded default without a config file).
    Serve(ServeArgs),
    /// Load and validate a config, print the resolved providers and model routes.
    Check(CheckArgs),
    /// Print the OpenAPI 3.1 document.
    Openapi,
    /// Exit 0 when the gateway's /healthz answers 200 within 2 s (the container's health check).
    Health(HealthArgs),
}

/// `llmgate health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to check; default `/healthz` on `LLMGATE_LISTEN` (else 127.0.0.1:8080).
    #[arg(long)]
    pub url: Option<String>,
}

/// `llmgate serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Config file (TOML). Without it the embedded default is used.
    #[arg(long, env = "LLMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, overriding `server.listen`.
    #[arg(long, env = "LLMGATE_LISTEN")]
    pub listen: Option<String>,
}

/// `llmgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file (TOML) to check.
    #[arg(long, env = "LLMGATE_CONFIG")]
    pub config: PathBuf,
}
