//! `portcullis signing-key new`: a private key for the authorization server to sign its
//! tokens with, written as PKCS#8 PEM (the form `[[authorization_server.keys]]` reads),
//! owner-only, never over an existing file; the answer is the config table to paste.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};

/// `signing-key`.
#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SigningKeyCommand,
}

/// `signing-key` commands.
#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Write a new private key (PKCS#8 PEM, mode 0600; an existing file is never
    /// overwritten) and print the `[[authorization_server.keys]]` table that uses it.
    New(NewSigningKeyArgs),
}

/// `signing-key new`.
#[derive(Debug, Args)]
pub struct NewSigningKeyArgs {
    /// The key id (`kid` in the tokens' header and the JWKS): 1 to 64 letters, digits,
    /// `.`, `_` or `-`.
    #[arg(long)]
    pub kid: String,
    /// The signature algorithm.
    #[arg(long, value_enum, ignore_case = true, default_value = "EdDSA")]
    pub algorithm: Algorithm,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The algorithms the authorization server signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    #[value(name = "ES256")]
    Es256,
}

impl Algorithm {
    /// The JOSE name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }
}

/// Why no key was written.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The kid is not a plain label.
    #[error("--kid: {0}")]
    Kid(String),
    /// The system's random source failed.
    #[error("the system's random number generator failed; no key was made")]
    Random,
    /// The output file exists.
    #[error(
        "{} already exists: a signing key is never overwritten; pick another --out",
        .0.display()
    )]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs a `signing-key` command; returns what to print.
pub fn run(args: &SigningKeyArgs) -> Result<String, SigningKeyError> {
    match &args.command {
        SigningKeyCommand::New(new) => new_key(new),
    }
}

fn new_key(args: &NewSigningKeyArgs) -> Result<String, SigningKeyError> {
    portcullis::oauth::clients_file::check_label(&args.kid).map_err(SigningKeyError::Kid)?;
    let rng = SystemRandom::new();
    let pkcs8 = match args.algorithm {
        Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
        Algorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
    }
    .map_err(|_| SigningKeyError::Random)?;
    let pem = pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", pkcs8.as_ref()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    write_new_private(&args.out, pem.as_bytes())?;
    // A relative `file://` key is read from the config's folder, which this command does not
    // know: the absolute path is right wherever the config lives.
    let path = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    let reference = format!("file://{}", path.display());
    let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
    Ok(format!(
        "Wrote a new {algorithm} signing key to {file} (owner-only). Add it to the config:\n\n\
         [[authorization_server.keys]]\n\
         kid = {kid}\n\
         algorithm = \"{algorithm}\"\n\
         private_key = {reference}\n\n\
         To rotate: add the new key next to the current one (the JWKS publishes both), set \
         `authorization_server.signing_key = {kid}` to sign with it, and remove the old key \
         once the tokens it signed have expired (`max_token_lifetime_secs`).\n",
        algorithm = args.algorithm.as_str(),
        file = args.out.display(),
        kid = quote(&args.kid),
        reference = quote(&reference),
    ))
}

/// Creates `path` with `bytes`, owner-only from the start (no window in which another user
/// could open it), failing if it exists.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), SigningKeyError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write_error = |source| SigningKeyError::Write {
        file: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            SigningKeyError::Exists(path.to_owned())
        } else {
            write_error(source)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| {
            // Half a key is no key: leave nothing that a later run would refuse to replace.
            let _ = std::fs::remove_file(path);
            write_error(source)
        })
}
