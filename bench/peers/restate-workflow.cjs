// The end_to_end workflow (bench/e2e-workflow.c) as a Restate workflow: 10 durable steps, each
// an FNV-1a checksum over 4 KiB that depends on the step and on the step before, its result
// (about 20 bytes of JSON) journaled by ctx.run(). Keyed by workflow id, run once per id, as an
// instance of runtara-environment is. usage: SDK_PORT=9080 node restate-workflow.cjs
'use strict';
// restate-sdk 1.17 calls Promise.withResolvers, which Node 20 does not have.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
const restate = require('@restatedev/restate-sdk');

const STEPS = 10;
const STEP_BYTES = 4096;

// FNV-1a over 4 KiB as e2e-workflow.c's step, in 32 bits: JavaScript's BigInt would make the
// step itself cost milliseconds, where the C step costs microseconds; the work stays negligible
// on both sides, as it is meant to be.
function checksum(k, carry) {
  let h = (0x811c9dc5 ^ carry) >>> 0;
  for (let i = 0; i < STEP_BYTES; i++) {
    h ^= (i * 31 + k) & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

async function run(ctx) {
  let carry = 0;
  for (let k = 1; k <= STEPS; k++) {
    const r = await ctx.run(`step${k}`, () => ({ step: k, sum: checksum(k, carry) }));
    carry = r.sum;
  }
  return { steps: STEPS, sum: carry };
}

const e2e = restate.workflow({ name: 'e2e', handlers: { run } });
restate.endpoint().bind(e2e).listen(Number(process.env.SDK_PORT || 9080));
