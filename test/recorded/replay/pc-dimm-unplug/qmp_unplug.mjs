// Drives the pc-dimm hotplug and unplug of this recording over QMP (see README.md here):
//   node qmp_unplug.mjs /tmp/zaplab-qmp.sock
// object-add + device_add a 128 MiB pc-dimm, device_del it, wait for DEVICE_DELETED (the boot sector
// in boot.S ejects it), object-del, quit. Exits 1 if the unplug does not complete in 20 s.
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const path = process.argv[2] ?? '/tmp/zaplab-qmp.sock';
let sock;
for (let i = 0; i < 100 && !sock; i++) {
  sock = await new Promise((res) => {
    const s = connect(path, () => res(s));
    s.on('error', () => res(undefined));
  });
  if (!sock) await sleep(100);
}
if (!sock) throw new Error(`${path}: no QMP socket`);
const waiting = [];
let buf = '';
sock.on('data', (d) => {
  buf += d.toString();
  for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
    const msg = JSON.parse(buf.slice(0, nl));
    buf = buf.slice(nl + 1);
    console.log(JSON.stringify(msg));
    const i = waiting.findIndex((w) => w.want(msg));
    if (i !== -1) waiting.splice(i, 1)[0].res(msg);
  }
});
const next = (want, ms = 20000) =>
  new Promise((res, rej) => {
    waiting.push({ want, res });
    setTimeout(() => rej(new Error('QMP: timed out')), ms).unref();
  });
const cmd = (execute, args = {}) => {
  const p = next((m) => 'return' in m || 'error' in m);
  sock.write(JSON.stringify({ execute, arguments: args }) + '\n');
  return p;
};
await next((m) => 'QMP' in m);
await cmd('qmp_capabilities');
await sleep(3000);
await cmd('object-add', { 'qom-type': 'memory-backend-ram', id: 'mem1', size: 128 << 20 });
await cmd('device_add', { driver: 'pc-dimm', id: 'dimm1', memdev: 'mem1' });
await sleep(1000);
const deleted = next((m) => m.event === 'DEVICE_DELETED' && m.data?.device === 'dimm1');
await cmd('device_del', { id: 'dimm1' });
try {
  await deleted;
} catch {
  console.error('the DIMM was not ejected (DEVICE_DELETED never came)');
  process.exitCode = 1;
}
if (!process.exitCode) await cmd('object-del', { id: 'mem1' });
await sleep(1000);
await cmd('quit');
sock.end();
