// What `cargo xtask interop` bundles with esbuild for the direct-upload
// browser checks and examples/browser-s3: Uppy's core, Dashboard and
// @uppy/aws-s3 at the versions it installs (no `uppy` bundle carries
// @uppy/aws-s3 6.3.1 yet).
export { default as Uppy } from '@uppy/core'
export { default as AwsS3 } from '@uppy/aws-s3'
export { default as Dashboard } from '@uppy/dashboard'
