//! `mta-loadgen`: SMTP load generator for the MTA's benchmarks. See
//! `benches/README.md`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mta_bench::cli::Cli;
use mta_bench::run;

fn main() -> ExitCode {
    // Bad usage (including a non-loopback --server) exits with status 2.
    let cli = Cli::parse();
    let opts = cli.options();
    if let Err(e) = opts.validate() {
        eprintln!("mta-loadgen: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mta-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if !cli.json {
        println!("{}", opts.describe());
        let _ = std::io::stdout().flush();
    }
    let report = match runtime.block_on(run(&opts)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("mta-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    ExitCode::from(report.exit_code())
}
