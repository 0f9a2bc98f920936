"""moto's S3 server with its writes serialized.

moto checks a conditional write's If-Match / If-None-Match and then stores the object,
without a lock, in a threaded server: two concurrent writes made against the same ETag can
both succeed, a lost update that S3 itself never allows. Folio's manifest updates rely on
those conditions, so this launcher runs moto's own server with every write request (PUT,
POST, DELETE) under one lock; reads stay concurrent. Arguments are moto_server's.
"""

import threading

import moto.server as server
from werkzeug.serving import run_simple

WRITES = {"PUT", "POST", "DELETE"}
lock = threading.Lock()


def serialized(app):
    def serve(environ, start_response):
        if environ.get("REQUEST_METHOD") not in WRITES:
            return app(environ, start_response)
        with lock:
            # moto answers with a complete body: drain it while the lock is held.
            return list(app(environ, start_response))

    return serve


def run_serialized(host, port, app, **options):
    return run_simple(host, port, serialized(app), **options)


server.run_simple = run_serialized

if __name__ == "__main__":
    server.main()
