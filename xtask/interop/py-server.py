"""Serves tus 1.0 from a Python peer, as `cargo xtask interop` runs it:
python py-server.py KIND PORT DIR, KIND being `tuspyserver` (FastAPI, with
concatenation) or `resumable-upload` (the standard library's HTTP server,
with the checksum extension in sha1 and sha256). Uploads end up under DIR.
Prints "listening" once it accepts connections."""

import sys

kind, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]

if kind == "tuspyserver":
    import uvicorn
    from fastapi import FastAPI
    from tuspyserver import create_tus_router

    app = FastAPI()
    app.include_router(create_tus_router(prefix="files", files_dir=directory))
    print("listening", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
elif kind == "resumable-upload":
    import os
    from http.server import ThreadingHTTPServer

    from resumable_upload import SQLiteStorage, TusHTTPRequestHandler, TusServer

    storage = SQLiteStorage(
        db_path=os.path.join(directory, "uploads.db"),
        upload_dir=os.path.join(directory, "uploads"),
    )

    class Handler(TusHTTPRequestHandler):
        tus_server = TusServer(
            storage=storage, base_path="/files", checksum_algorithms=("sha1", "sha256")
        )

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("listening", flush=True)
    server.serve_forever()
else:
    sys.exit(f"unknown peer {kind!r}")
