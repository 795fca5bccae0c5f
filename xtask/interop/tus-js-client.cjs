// Uploads one file to a tus or IETF-draft endpoint with tus-js-client, as
// `cargo xtask interop` runs it: node tus-js-client.cjs ENDPOINT FILE
// PROTOCOL PARALLEL CHUNK [abort|through [NAME [RETRY_DELAYS]]]. With
// "abort" the upload is aborted once half of it is sent, then started again
// from where the server says it is. NAME is the file name it is sent under
// (the file's own by default); RETRY_DELAYS, in ms and comma-separated,
// turns tus-js-client's retries on as Uppy has them. Prints one JSON line:
// the upload URL and how many bytes were sent; exits 1 when onError fires.
const fs = require('fs')
const path = require('path')
const tus = require('tus-js-client')

const [endpoint, file, protocol, parallel, chunk, abort, name, retries] = process.argv.slice(2)
const data = fs.readFileSync(file)
let sent = 0
let aborted = false
let succeeded = false
process.on('exit', () => {
  if (!succeeded) {
    console.error('tus-js-client stopped without finishing the upload')
    process.exitCode = 1
  }
})

const upload = new tus.Upload(data, {
  endpoint,
  protocol,
  parallelUploads: Number(parallel),
  chunkSize: Number(chunk),
  retryDelays: retries ? retries.split(',').map(Number) : [],
  removeFingerprintOnSuccess: true,
  metadata: { filename: name || path.basename(file) },
  onChunkComplete(chunkSize, accepted, total) {
    sent += chunkSize
    if (abort === 'abort' && !aborted && accepted * 2 >= total && accepted < total) {
      aborted = true
      upload.abort().then(() => upload.start())
    }
  },
  onError(error) {
    console.error(`tus-js-client: ${error}`)
    process.exit(1)
  },
  onSuccess() {
    succeeded = true
    console.log(JSON.stringify({ url: upload.url, sent, aborted }))
  },
})
upload.start()
