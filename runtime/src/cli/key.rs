//! `weir key new` and `weir key hash`: API keys for `[[keys]]`.
//!
//! Owns: making a key and printing the config entry that admits it. weir stores only the
//! blake3 digest of a key ([`hash_key`]), so the key itself is printed once, here, and never
//! written anywhere by weir.

use std::io::Read;
use std::process::ExitCode;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::config::{MAX_NAME_LEN, hash_key};

/// What every generated key starts with (lets secret scanners and people recognise one).
const KEY_PREFIX: &str = "sk-weir-";

/// Random alphanumerics after the prefix: 40 × log2(62) ≈ 238 bits.
const KEY_RANDOM_CHARS: usize = 40;

/// Most bytes `weir key hash` reads from stdin (a key is far shorter).
const MAX_STDIN_BYTES: u64 = 64 * 1024;

/// Arguments of `weir key`.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `weir key` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a random API key and print it once, with the `[[keys]]` table for weir.toml.
    ///
    /// Prints the key on the first line, then the table holding its blake3 hash (weir never
    /// stores the key itself) and commented examples of the limits a key can have.
    New(NewArgs),
    /// Read a key from stdin and print its `blake3:<hex>` hash, for keys issued elsewhere.
    ///
    /// Leading and trailing whitespace (the newline of `echo`) is not part of the key.
    Hash,
}

/// Arguments of `weir key new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The key's name in the config, the ledger and logs: `a-z`, `0-9`, `_` and `-`, 1 to 64
    /// characters.
    #[arg(long, default_value = "default", value_parser = parse_name)]
    pub name: String,
}

/// Runs `weir key`.
pub fn run(args: KeyArgs) -> ExitCode {
    match args.command {
        KeyCommand::New(args) => {
            let key = new_key();
            println!("{key}");
            println!();
            print!("{}", keys_table(&args.name, &key));
            eprintln!(
                "The first line is the key: it is shown only this once, so hand it to the \
                 client now. Paste the [[keys]] table into weir.toml; it holds only the hash."
            );
            ExitCode::SUCCESS
        }
        KeyCommand::Hash => {
            let mut text = String::new();
            if let Err(err) = std::io::stdin()
                .take(MAX_STDIN_BYTES)
                .read_to_string(&mut text)
            {
                eprintln!("error: cannot read the key from stdin: {err}");
                return ExitCode::from(2);
            }
            let key = text.trim();
            if key.is_empty() {
                eprintln!("error: expected a key on stdin, got nothing");
                return ExitCode::from(2);
            }
            println!("{}", hash_text(key));
            ExitCode::SUCCESS
        }
    }
}

/// A new key: [`KEY_PREFIX`] and [`KEY_RANDOM_CHARS`] alphanumerics from the thread's CSPRNG.
pub fn new_key() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{KEY_PREFIX}{random}")
}

/// `blake3:<64 hex>`, the form of `keys[].hash`.
pub fn hash_text(key: &str) -> String {
    format!("blake3:{}", blake3::Hash::from(hash_key(key)).to_hex())
}

/// The `[[keys]]` table admitting `key` as `name`, with the limits as comments.
pub fn keys_table(name: &str, key: &str) -> String {
    format!(
        "[[keys]]\n\
         name = \"{name}\"\n\
         hash = \"{}\"\n\
         # Limits (all optional; uncomment to use):\n\
         # daily_budget_usd = 5.0             # spend per UTC day\n\
         # monthly_budget_usd = 100.0         # spend per UTC calendar month\n\
         # rpm = 60                           # requests per minute\n\
         # tpm = 100000                       # tokens (prompt + completion) per minute\n\
         # max_cost_per_request_usd = 0.5     # most one request may cost\n\
         # max_llm_calls_per_request = 8      # most LLM calls one request may make\n",
        hash_text(key)
    )
}

/// A config name: `[a-z0-9_-]`, 1 to [`MAX_NAME_LEN`] characters (the rule the config
/// applies to `keys[].name`).
fn parse_name(name: &str) -> Result<String, String> {
    if crate::config::is_valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "expected a name of 1 to {MAX_NAME_LEN} characters from `a-z`, `0-9`, `_` and `-`, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_alphanumerics() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let random = a.strip_prefix(KEY_PREFIX).unwrap_or_default();
        assert_eq!(random.len(), KEY_RANDOM_CHARS);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn the_printed_table_is_accepted_by_the_config_and_admits_the_key() {
        let key = new_key();
        let text = format!(
            "[targets.up]\nbase_url = \"http://127.0.0.1:9101/v1\"\n\n\
             [[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n\n{}",
            keys_table("team-a", &key)
        );
        let config = crate::config::Config::parse(&text, "weir.toml".as_ref(), &|_| None);
        let keys = config.map(|c| c.keys).unwrap_or_default();
        assert_eq!(keys.len(), 1, "{text}");
        assert_eq!(keys[0].name, "team-a");
        assert_eq!(keys[0].hash, hash_key(&key));
        assert_eq!(keys[0].daily_budget, None, "limits stay commented out");
    }

    #[test]
    fn names_follow_the_config_rule() {
        assert!(parse_name("team-a_1").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name("Team").is_err());
        assert!(parse_name("a b").is_err());
        assert!(parse_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(parse_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
