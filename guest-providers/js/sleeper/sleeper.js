// sleeper: a JavaScript component that waits on a timer, for the host's deadline tests.
// A test fixture, not a provider: see README.md.
//
// JavaScript has no blocking sleep, but componentize-js runs every export as an async
// function and drives the engine's event loop until the returned promise settles. A pending
// `setTimeout` makes that loop wait in a WASI `poll` on a monotonic-clock pollable: the
// guest waits inside a host call, exactly as a Rust `std::thread::sleep` does.

let sleepMs = 0;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function configure(config) {
  const settings = JSON.parse(config.trim() === '' ? '{}' : config);
  sleepMs = Number(settings.ms ?? 0);
  if ((settings.where ?? 'authenticate') === 'configure') {
    await sleep(sleepMs);
  }
}

export async function authenticate(req) {
  if (req.header('x-sleep') !== undefined) {
    await sleep(sleepMs);
  }
  return { tag: 'allow', val: { subject: 'js-slept', scopes: [], claims: [] } };
}
