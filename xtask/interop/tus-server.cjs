// Serves tus 1.0 with @tus/server and @tus/file-store, as `cargo xtask
// interop` runs it: node tus-server.cjs PORT DIR. Uploads are kept in DIR
// under their upload id. Prints "listening" once it accepts connections.
const { Server } = require('@tus/server')
const { FileStore } = require('@tus/file-store')

const [port, directory] = process.argv.slice(2)
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) })
server.listen({ host: '127.0.0.1', port: Number(port) }, () => console.log('listening'))
