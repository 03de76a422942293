//! The `llmgate` binary: parse the command line, set up logging, load the config, bind the
//! listener and hand over to [`llmgate::server::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use llmgate::cli::{CheckArgs, Cli, Command, ServeArgs};
use llmgate::config;
use llmgate::server::{self, AppState, ConfigSource};
use llmgate::telemetry::{self, Telemetry};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// mimalloc instead of glibc's malloc: allocation was a fifth of the gateway's CPU under load
/// (perf, `benches/load`), and mimalloc's thread-local free lists serve these small,
/// short-lived request allocations faster.
/// (`--no-default-features` keeps the system allocator, for heap profilers such as massif.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(&args),
        Command::Openapi => {
            print!("{}", server::openapi::document());
            Ok(())
        }
        Command::Health(args) => health(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llmgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `llmgate health`: exit 0 when the gateway answers 200 on its health URL.
fn health(args: &llmgate::cli::HealthArgs) -> anyhow::Result<()> {
    let listen = std::env::var("LLMGATE_LISTEN").ok();
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| llmgate::healthcheck::default_url(listen.as_deref()));
    llmgate::healthcheck::check(&url).map_err(|why| anyhow::anyhow!("unhealthy: {why}"))
}

/// Where the config comes from, with the precedence flag > environment > file > default.
fn config_source(args: &ServeArgs) -> anyhow::Result<ConfigSource> {
    let listen = args
        .listen
        .as_deref()
        .map(config::parse_listen)
        .transpose()
        .map_err(|m| anyhow::anyhow!("--listen / LLMGATE_LISTEN: {m}"))?;
    Ok(ConfigSource {
        path: args.config.clone(),
        listen,
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let source = config_source(&args)?;
    let state = AppState::load(source)?;
    // Before the runtime: the exporter's blocking HTTP client makes its own.
    let telemetry =
        Telemetry::new(state.otlp_endpoint().as_deref()).context("setting up trace export")?;
    init_tracing(&telemetry);
    let workers = worker_threads();
    let runtime = runtime(workers).context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let listen = state.listen();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let source = args
            .config
            .as_ref()
            .map_or("embedded default".to_owned(), |p| p.display().to_string());
        tracing::info!(listen = %listener.local_addr()?, config = %source, workers, "llmgate listening");
        tokio::select! {
            served = server::run(listener, state.clone(), shutdown_signal()) => served?,
            never = reload_on_sighup(state) => match never {},
        }
        tracing::info!("stopped");
        Ok(())
    });
    // Dropping the runtime drops what still runs, which ends its spans; then the flush sends
    // them (blocking, so outside the runtime).
    drop(runtime);
    telemetry.shutdown();
    served
}

/// How many threads serve: `TOKIO_WORKER_THREADS` when set, else the CPUs this process may
/// run on (its CPU affinity and cgroup quota).
fn worker_threads() -> usize {
    let configured = std::env::var("TOKIO_WORKER_THREADS").ok();
    configured
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// The async runtime: with one worker, tokio's single-threaded runtime (a work-stealing
/// scheduler has nobody to steal from there, and its bookkeeping cost 8 µs of CPU per
/// request, a fifth, on one CPU: `benches/load`); otherwise the multi-threaded one with
/// `workers` threads.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let config = config::load_file(&args.config)?;
    // Building the adapters catches what only they can check (TLS setup, header values).
    AppState::new(&config)?;
    println!("config OK: {}", args.config.display());
    print!("{}", config.describe());
    Ok(())
}

/// Reloads the config on every SIGHUP (the reload logs its outcome); never ends.
async fn reload_on_sighup(state: AppState) -> std::convert::Infallible {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = state.reload().await;
                }
            }
            Err(_) => tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload"),
        }
    }
    #[cfg(not(unix))]
    let _ = state;
    std::future::pending().await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// `RUST_LOG` or `LLMGATE_LOG` set the log filter (default `info`); `LLMGATE_LOG_FORMAT=json`
/// switches to JSON lines. Trace spans go to the OpenTelemetry layer whatever the log filter.
fn init_tracing(telemetry: &Telemetry) {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("LLMGATE_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let mut filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if let Ok(spans_off) = format!("{}=off", telemetry::TARGET).parse() {
        filter = filter.add_directive(spans_off);
    }
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = if std::env::var("LLMGATE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"))
    {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(telemetry.layer())
        .init();
}
