// The page a browser check runs in: served on an origin of its own, with
// Uppy's bundle beside it, and opened in Debian's chromium (headless),
// driven by puppeteer-core. Used by uppy-browser.cjs and
// uppy-s3-browser.cjs.
const fs = require('fs')
const http = require('http')
const puppeteer = require('puppeteer-core')

const bundle = require.resolve('uppy/dist/uppy.min.js')

// Serves `page` at / and Uppy's bundle at /uppy.min.js (`route(req, res)`
// may answer a request first, returning true), and opens the page.
// Resolves with the tab, the page's origin, and `close`.
async function openPage (page, route = () => false) {
  const server = http.createServer((req, res) => {
    if (route(req, res)) return
    if (req.url === '/uppy.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' })
      fs.createReadStream(bundle).pipe(res)
    } else {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(page)
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const origin = `http://127.0.0.1:${server.address().port}`
  let browser
  try {
    browser = await puppeteer.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    })
  } catch (e) {
    server.close()
    throw e
  }
  const tab = await browser.newPage()
  await tab.goto(origin + '/')
  const close = async () => {
    await browser.close()
    server.close()
  }
  return { tab, origin, close }
}

module.exports = { bundle, openPage }
