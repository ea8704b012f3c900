//! The load harness's JWT baseline: a bare `ring` RS256 signature check of one token, in a
//! loop on one thread, reporting the CPU time per verify. Nothing else of JWT validation is
//! done (no base64 of the header or claims, no JSON, no claim checks): this is the floor
//! the gateway's JWT chain is compared with. ring has no pre-parsed RSA public key, so each
//! verify also derives the modulus' Montgomery constants, as every ring-based validator
//! (jsonwebtoken included) does.
//!
//! `verify_rs256 <n base64url> <token> [seconds]` prints `verifies=N cpu_us_per_verify=X`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

/// This process's user + system CPU time, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may contain spaces) start at `) `.
    let rest = stat
        .rsplit_once(") ")
        .context("unexpected /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(n), Some(token)) = (args.next(), args.next()) else {
        bail!("usage: verify_rs256 <n base64url> <token> [seconds]");
    };
    let seconds: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let n = URL_SAFE_NO_PAD.decode(n).context("n is not base64url")?;
    let (signing_input, signature) = token.rsplit_once('.').context("not a JWS")?;
    let signature = URL_SAFE_NO_PAD.decode(signature).context("bad signature")?;
    let key = RsaPublicKeyComponents {
        n: n.as_slice(),
        e: [1u8, 0, 1].as_slice(),
    };
    key.verify(
        &RSA_PKCS1_2048_8192_SHA256,
        signing_input.as_bytes(),
        &signature,
    )
    .map_err(|_| anyhow::anyhow!("the token does not verify with this key"))?;
    let (started, cpu_before) = (Instant::now(), cpu_time()?);
    let mut verifies: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..100 {
            let ok = key
                .verify(
                    &RSA_PKCS1_2048_8192_SHA256,
                    signing_input.as_bytes(),
                    &signature,
                )
                .is_ok();
            std::hint::black_box(ok);
        }
        verifies += 100;
    }
    let cpu = cpu_time()? - cpu_before;
    #[expect(clippy::cast_precision_loss, reason = "a ratio for a report")]
    let per_verify = cpu.as_secs_f64() * 1e6 / verifies as f64;
    println!("verifies={verifies} cpu_us_per_verify={per_verify:.1}");
    Ok(())
}
