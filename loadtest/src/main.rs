//! The `sbc-load` binary.

use std::process::ExitCode;

use clap::Parser;
use sbc_loadtest::cli::{Args, normalize};
use sbc_loadtest::run;

fn main() -> ExitCode {
    let args = match normalize(std::env::args()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sbc-load: {e}");
            return ExitCode::from(255);
        }
    };
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 255 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(name) = &args.dump_scenario {
        return match sbc_loadtest::builtin(name) {
            Some(xml) => {
                print!("{xml}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "sbc-load: -sd {name}: the built-in scenarios are {}",
                    run::BUILTINS
                );
                ExitCode::from(255)
            }
        };
    }
    match run::run(&args) {
        Ok(outcome) => ExitCode::from(outcome.code),
        Err(e) => {
            eprintln!("sbc-load: {e}");
            ExitCode::from(e.code)
        }
    }
}
