//! Why a configuration could not be loaded.

use std::path::PathBuf;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key or value we do not know.
    /// The message names the line and column, with a caret under the spot.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending line.
        message: String,
    },
    /// The file parses but says something impossible; every problem found.
    #[error("{}", .problems.join("\n"))]
    Meaning {
        /// One line per problem, each prefixed with the file and the key.
        problems: Vec<String>,
    },
}
