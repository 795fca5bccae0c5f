// Serves tus 1.0 with @tus/server and @tus/file-store, as `cargo xtask
// interop` runs it: node tus-server.cjs PORT DIR. Uploads are kept in DIR
// under their upload id. `GET /received` answers how many upload bytes the
// store has taken in all, so a test can count what a resumed client sent.
// Prints "listening" once it accepts connections.
const http = require('http')
const { Transform } = require('stream')
const { Server } = require('@tus/server')
const { FileStore } = require('@tus/file-store')

const [port, directory] = process.argv.slice(2)
let received = 0
const datastore = new FileStore({ directory })
const write = datastore.write.bind(datastore)
datastore.write = (readable, id, offset) => {
  const counter = new Transform({
    transform(chunk, _encoding, done) {
      received += chunk.length
      done(null, chunk)
    },
  })
  readable.on('error', (e) => counter.destroy(e))
  return write(readable.pipe(counter), id, offset)
}
const tus = new Server({ path: '/files', datastore })
http
  .createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/received') {
      res.end(String(received))
      return
    }
    tus.handle(req, res)
  })
  .listen(Number(port), '127.0.0.1', () => console.log('listening'))
