// Uppy in a real browser (Debian's chromium, headless, driven by
// puppeteer-core) against our receiver, as `cargo xtask interop` runs it:
//   node uppy-browser.cjs RECEIVER_URL STORE_DIR [BALANCER_URL]
// The receiver must allow the page's origin (--cors-origin). Four cases,
// each printed as one JSON line {case, successful, failed, errors}:
// - "tus": a file sent with @uppy/tus lands;
// - "tus-taken": a file whose name a folder takes while it uploads (the
//   landing fails): Uppy must report it failed, not uploaded;
// - "bundle": three files in one XHRUpload request (bundle: true): the
//   receiver refuses the form, and Uppy must report all three failed;
// - "pause-resume" (through BALANCER_URL, nginx in front of the receiver):
//   a 50 MiB file in one PATCH, paused at a third and resumed; it must
//   land (the harness counts the bytes nginx took).
const fs = require('fs')
const path = require('path')
const { openPage } = require('./browser.cjs')

const [receiver, store, balancer] = process.argv.slice(2)

const page = `<!doctype html><meta charset="utf-8"><script src="/uppy.min.js"></script>
<script>
  // Runs one case; resolves with what Uppy says of its files.
  window.runCase = async (kind, endpoint, files, chunkSize) => {
    const uppy = new Uppy.Uppy({ autoProceed: false })
    if (kind === 'bundle') {
      uppy.use(Uppy.XHRUpload, { endpoint, bundle: true, fieldName: 'files[]' })
    } else {
      uppy.use(Uppy.Tus, { endpoint, chunkSize: chunkSize || Infinity, retryDelays: [0, 300, 600] })
    }
    if (kind === 'pause') {
      // Paused once a third is sent, resumed a second later, as a user
      // would (or a page reload would, from the stored URL).
      let paused = false
      uppy.on('upload-progress', (file, progress) => {
        if (!paused && progress.bytesUploaded > progress.bytesTotal / 3) {
          paused = true
          uppy.pauseResume(file.id)
          setTimeout(() => uppy.pauseResume(file.id), 1000)
        }
      })
    }
    const errors = []
    uppy.on('upload-error', (file, error) => errors.push(file.name + ': ' + error.message))
    for (const [name, size] of files) {
      const bytes = new Uint8Array(size)
      for (let i = 0; i < size; i++) bytes[i] = (i * 31 + name.length) & 255
      uppy.addFile({ name, type: 'application/octet-stream', data: new Blob([bytes]) })
    }
    // A bundle's refusal rejects upload() itself: what Uppy says of each
    // file is then in its state, as its UI would show it.
    try {
      await uppy.upload()
    } catch (e) {
      errors.push('upload: ' + e.message)
    }
    const states = uppy.getFiles()
    return {
      successful: states.filter((f) => f.progress.uploadComplete && !f.error).length,
      failed: states.filter((f) => f.error).length,
      errors,
    }
  }
</script>`

async function main () {
  const { tab, close } = await openPage(page)
  let failures = 0
  try {
    const run = async (name, kind, endpoint, files, chunkSize, expect, during) => {
      const pending = tab.evaluate((k, e, f, c) => window.runCase(k, e, f, c), kind, endpoint, files, chunkSize)
      if (during) await during()
      const got = await pending
      const ok = got.successful === expect.successful && got.failed === expect.failed
      if (!ok) failures++
      console.log(JSON.stringify({ case: name, ok, ...got }))
    }
    const files = receiver.replace(/\/$/, '') + '/files'
    const upload = receiver.replace(/\/$/, '') + '/upload'

    await run('tus', 'tus', files, [['uppy-landed.bin', 3 << 20]], 1 << 20, { successful: 1, failed: 0 })

    // Once the upload is created (its partial file is there), a folder
    // takes its name: every byte arrives, the landing cannot happen.
    const partials = () => fs.readdirSync(path.join(store, '.fileuploader-partial')).filter((n) => n.startsWith('id-')).length
    const before = partials()
    await run('tus-taken', 'tus', files, [['uppy-taken.bin', 24 << 20]], 256 << 10, { successful: 0, failed: 1 }, async () => {
      const started = Date.now()
      while (partials() <= before && Date.now() - started < 20000) await new Promise((r) => setTimeout(r, 5))
      fs.mkdirSync(path.join(store, 'uppy-taken.bin'))
    })

    await run('bundle', 'bundle', upload, [['uppy-a.bin', 1000], ['uppy-b.bin', 2000], ['uppy-c.bin', 3000]], 0, { successful: 0, failed: 3 })

    if (balancer) {
      const through = balancer.replace(/\/$/, '') + '/files'
      await run('pause-resume', 'pause', through, [['uppy-paused.bin', 50 << 20]], 0, { successful: 1, failed: 0 })
    }
  } finally {
    await close()
  }
  process.exitCode = failures ? 1 : 0
}

main().catch((e) => {
  console.error(`uppy-browser: ${e && e.stack || e}`)
  process.exit(1)
})
