//! `tandem`: a Dapr-compatible sidecar and transparent mesh proxy.
//! Parses the command line and dispatches; the work lives in `cli/` and in
//! the workspace crates.
#![forbid(unsafe_code)]

mod cli;
mod home;
mod sidecar;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    about = "A Dapr-compatible sidecar runtime and service-mesh proxy",
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the version, as `dapr --version` does.
    #[arg(long = "version", short = 'v')]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar alone, with daprd's flags.
    Sidecar(cli::sidecar::Args),
    /// Run an app with its sidecar, like `dapr run`.
    Run(cli::run::Args),
    /// Stop an app started with `tandem run`.
    Stop(cli::stop::Args),
    /// List apps started with `tandem run`.
    List(cli::list::Args),
    /// Write the default resources to ~/.tandem/components.
    Init(cli::init::Args),
    /// The local certificate authority for mTLS between sidecars.
    #[command(subcommand)]
    Ca(cli::ca::Command),
    /// The certificate service that signs sidecars' mTLS certificates
    /// across hosts (a Dapr Sentry equivalent).
    Sentry(cli::sentry::Args),
    /// The nat rules of transparent mode (install, remove, show, validate).
    #[command(subcommand)]
    Iptables(cli::iptables::Command),
    /// What a running sidecar serves: generation, resources, last reload.
    Status(cli::status::Args),
    /// Apply (or delete) a resource document on a running sidecar.
    Apply(cli::apply::Args),
    /// Invoke a method of an app, like `dapr invoke`.
    Invoke(cli::invoke::InvokeArgs),
    /// Publish an event, like `dapr publish`.
    Publish(cli::invoke::PublishArgs),
    /// The CLI and runtime versions, like `dapr version`.
    Version(cli::invoke::VersionArgs),
    /// A web UI over every sidecar found: apps, traffic, resilience,
    /// configuration, actors and workflows.
    Dashboard(cli::dashboard::Args),
    /// Internal: the process between `tandem run` and what it starts.
    #[command(name = "__guard", hide = true)]
    Guard(cli::guard::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        if cli.version {
            print!("{}", cli::invoke::version_text());
        }
        return std::process::ExitCode::SUCCESS;
    };
    // The guard is small and mostly waits: one thread. A sidecar (alone or
    // under `tandem run`) serves on `--worker-threads` (ARCHITECTURE:
    // "Threads"); other commands on one per core.
    let threads = match &command {
        Command::Guard(_) => 1,
        Command::Sidecar(a) => a.options.worker_threads,
        Command::Run(a) => a.options.worker_threads,
        _ => 0,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Sidecar(a) => cli::sidecar::main(a).await,
            Command::Run(a) => cli::run::main(a).await,
            Command::Stop(a) => cli::stop::main(a).await,
            Command::List(a) => cli::list::main(a).await,
            Command::Init(a) => cli::init::main(a).await,
            Command::Ca(c) => cli::ca::main(c).await,
            Command::Sentry(a) => cli::sentry::main(a).await,
            Command::Iptables(c) => cli::iptables::main(c).await,
            Command::Status(a) => cli::status::main(a).await,
            Command::Apply(a) => cli::apply::main(a).await,
            Command::Invoke(a) => cli::invoke::invoke(a).await,
            Command::Publish(a) => cli::invoke::publish(a).await,
            Command::Version(a) => cli::invoke::version(a).await,
            Command::Dashboard(a) => cli::dashboard::main(a).await,
            Command::Guard(a) => cli::guard::main(a).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
