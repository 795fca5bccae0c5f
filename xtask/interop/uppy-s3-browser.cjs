// Uppy's @uppy/aws-s3 in a real browser (Debian's chromium, headless,
// driven by puppeteer-core), signing through our receiver's Companion
// routes and sending the bytes straight to the bucket, as
// `cargo xtask interop companion` runs it:
//   node uppy-s3-browser.cjs RECEIVER_URL EXAMPLE_PAGE BUNDLE_DIR
// BUNDLE_DIR holds Uppy as the harness bundled it (uppy.min.js, .mjs, .css:
// core, Dashboard and the @uppy/aws-s3 under test).
// The page is served from an origin of its own; the receiver (--cors-origin)
// and the bucket (its CORS rules, ETag exposed) must allow it. Five cases,
// each printed as one JSON line {case, ok, successful, failed, keys, errors,
// pausedAt}:
// - "post-form": a 1 MiB file, sent whole with the form GET params signs;
// - "multipart-pause": a 50 MiB file in 5 MiB parts, paused halfway through
//   a part past a third of the file and resumed a second later;
// - "sign-request-put" and "sign-request-multipart": the same through
//   @uppy/aws-s3's signRequest, each request to the bucket signed by the
//   receiver's POST /s3/sign (1 MiB whole, 12 MiB in 5 MiB parts);
// - "example-page": examples/browser-s3/index.html as a user would use it:
//   a 20 MiB file chosen in Uppy's Dashboard, sent with its upload button.
// A file named N holds bytes (i * 31 + len(N)) & 255, for the harness to
// compare with what landed.
const fs = require('fs')
const os = require('os')
const path = require('path')
const { openPage } = require('./browser.cjs')

const [receiver, examplePage, dist] = process.argv.slice(2)

const page = `<!doctype html><meta charset="utf-8"><script src="/uppy.min.js"></script>
<script>
  window.runCase = async (kind, endpoint, name, size) => {
    const uppy = new Uppy.Uppy({ autoProceed: false })
    const multipart = kind === 'multipart' || kind === 'sign-multipart'
    const signing = kind === 'sign' || kind === 'sign-multipart'
    uppy.use(Uppy.AwsS3, signing ? {
      // Each request to the bucket signed by the receiver's one route.
      signRequest: async (request) => {
        const answer = await fetch(endpoint + '/s3/sign', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(request),
        })
        if (!answer.ok) throw new Error('signing answered ' + answer.status + ': ' + await answer.text())
        return answer.json()
      },
      shouldUseMultipart: multipart,
      getChunkSize: () => 5 << 20,
    } : {
      companionEndpoint: endpoint,
      shouldUseMultipart: multipart,
      getChunkSize: () => 5 << 20,
    })
    let pausedAt = null
    if (multipart) {
      // Paused past a third of the file, halfway through a part (Uppy sends
      // one part at a time; the harness slows the browser's uploads so
      // that the bucket is still taking the part's body). A part cut off
      // as it ends can be listed by Garage as stored yet refused at the
      // completion (InvalidPart): its request's clean-up runs after the
      // part is recorded, so the case does not pause there.
      const part = 5 << 20
      uppy.on('upload-progress', (file, progress) => {
        const into = progress.bytesUploaded % part
        const midPart = into > part / 4 && into < (part * 3) / 4
        if (pausedAt === null && midPart && progress.bytesUploaded > progress.bytesTotal / 3) {
          pausedAt = progress.bytesUploaded
          uppy.pauseResume(file.id)
          setTimeout(() => uppy.pauseResume(file.id), 1000)
        }
      })
    }
    const errors = []
    uppy.on('upload-error', (file, error) => errors.push(file.name + ': ' + error.message))
    const bytes = new Uint8Array(size)
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + name.length) & 255
    uppy.addFile({ name, type: 'application/octet-stream', data: new Blob([bytes]) })
    try {
      await uppy.upload()
    } catch (e) {
      errors.push('upload: ' + e.message)
    }
    const states = uppy.getFiles()
    return {
      successful: states.filter((f) => f.progress.uploadComplete && !f.error).length,
      failed: states.filter((f) => f.error).length,
      keys: states.map((f) => f.response && f.response.body && f.response.body.key),
      errors,
      pausedAt,
    }
  }
</script>`

async function main () {
  // The bundle the page loads; the example page, with the ES module and
  // styles beside it.
  const example = (req, res) => {
    if (['/uppy.min.js', '/example/uppy.min.mjs', '/example/uppy.min.css'].includes(req.url)) {
      const css = req.url.endsWith('.css')
      res.writeHead(200, { 'content-type': css ? 'text/css' : 'text/javascript' })
      fs.createReadStream(path.join(dist, path.basename(req.url))).pipe(res)
      return true
    }
    if (req.url === '/example/') {
      const html = fs.readFileSync(examplePage, 'utf8').replace("'http://127.0.0.1:8080'", JSON.stringify(receiver))
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(html)
      return true
    }
    return false
  }
  const { tab, origin, close } = await openPage(page, example)
  let failures = 0
  try {
    const endpoint = receiver.replace(/\/$/, '')
    for (const [name, kind, file, size] of [
      ['post-form', 'form', 'uppy-form.bin', 1 << 20],
      ['multipart-pause', 'multipart', 'uppy-multipart.bin', 50 << 20],
      ['sign-request-put', 'sign', 'uppy-signed.bin', 1 << 20],
      ['sign-request-multipart', 'sign-multipart', 'uppy-signed-parts.bin', 12 << 20],
    ]) {
      // 20 MiB/s for the multipart cases: each part takes a quarter of a
      // second to send, so the pause comes while its body is on its way.
      const slow = kind.endsWith('multipart') ? { upload: 20 << 20, download: -1, latency: 0 } : null
      await tab.emulateNetworkConditions(slow)
      const got = await tab.evaluate((k, e, n, s) => window.runCase(k, e, n, s), kind, endpoint, file, size)
      // A multipart case that never paused did not test what it names.
      const ok = got.successful === 1 && got.failed === 0 && (slow === null || got.pausedAt !== null)
      if (!ok) failures++
      console.log(JSON.stringify({ case: name, ok, file, size, ...got }))
    }
    await tab.emulateNetworkConditions(null)
    // The example page, as a user would use it.
    const name = 'uppy-example.bin'
    const size = 20 << 20
    const bytes = Buffer.alloc(size)
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + name.length) & 255
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'uppy-example-')), name)
    fs.writeFileSync(file, bytes)
    await tab.goto(origin + '/example/')
    const input = await tab.waitForSelector('.uppy-Dashboard-input', { timeout: 20000 })
    await input.uploadFile(file)
    const button = await tab.waitForSelector('.uppy-StatusBar-actionBtn--upload', { timeout: 20000 })
    await button.click()
    const landed = await tab
      .waitForFunction(() => document.getElementById('landed').textContent.includes('landed as'), { timeout: 120000 })
      .then(() => tab.$eval('#landed', (e) => e.textContent))
      .catch((e) => 'not landed: ' + e.message)
    const key = (landed.match(/landed as (\S+)/) || [])[1]
    if (!key) failures++
    console.log(JSON.stringify({ case: 'example-page', ok: !!key, file: name, size, keys: [key], said: landed }))
  } finally {
    await close()
  }
  process.exitCode = failures ? 1 : 0
}

main().catch((e) => {
  console.error(`uppy-s3-browser: ${e && e.stack || e}`)
  process.exit(1)
})
