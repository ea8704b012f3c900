//! The `portcullis` binary: parse the command line, run the command, map the outcome to an
//! exit code. The commands live in this crate's library; everything else in `portcullis`.

use std::process::ExitCode;

use clap::Parser as _;
use portcullis_cli::{self as cli, Cli, Command, ServeArgs};

// mimalloc instead of the system allocator: a proxied request makes some forty small
// allocations (most of them in hyper), and with glibc's malloc they cost ~9% of the
// gateway's instructions per request (callgrind; BENCHMARKS.md). Only the binary chooses;
// applications embedding the library keep their own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
            Command::Serve(args) => {
                cli::serve(&args).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Check(args) => {
                println!("{}", cli::check(&args).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Eval(args) => {
                cli::logging::init_stderr_logging_from_env();
                let report = cli::eval(&args).await?;
                print!("{}", report.text);
                Ok(if report.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Command::HashKey(args) => {
                println!("{}", cli::hash_key(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::New(args) => {
                print!("{}", cli::new_provider(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Keys(args) => {
                print!("{}", cli::keys::run(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Clients(args) => {
                print!("{}", cli::clients::run(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::SigningKey(args) => {
                print!("{}", cli::signing_key::run(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Identity(args) => {
                print!("{}", cli::identity::run(&args)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
