"""A real S3-compatible server for the tests: moto's (`moto[server]` from PyPI), as a process.

It speaks the S3 REST protocol over HTTP on a free port, with multipart uploads, ranged reads,
bulk deletes and presigned URLs; nothing is persisted. With `authenticated=True` it checks
every request's SigV4 signature against access keys made through its IAM API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import boto3

from tests.helpers import free_port, wait_http

REGION = "us-east-1"
ANONYMOUS = ("test-key", "test-secret")
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


class S3Server:
    def __init__(self, authenticated: bool = False) -> None:
        self.port = free_port()
        self.authenticated = authenticated
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        env = dict(os.environ)
        if self.authenticated:
            # The first three calls (user, policy, access key) may go unsigned; no others.
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/moto-api/", self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self, credentials: tuple[str, str] = ANONYMOUS, service: str = "s3") -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
        )

    def new_user(self) -> tuple[str, str]:
        """An IAM user allowed all of S3, and its key pair (authenticated servers)."""
        iam = self.client(service="iam")
        iam.create_user(UserName="gateway")
        iam.put_user_policy(
            UserName="gateway", PolicyName="s3", PolicyDocument=json.dumps(ALLOW_S3)
        )
        key = iam.create_access_key(UserName="gateway")["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def bucket(self, name: str, credentials: tuple[str, str] = ANONYMOUS) -> str:
        self.client(credentials).create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, credentials: tuple[str, str] = ANONYMOUS) -> list[str]:
        listing = self.client(credentials).list_objects_v2(Bucket=bucket)
        return sorted(entry["Key"] for entry in listing.get("Contents", []))

    def unfinished_uploads(self, bucket: str) -> list[str]:
        listing = self.client().list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in listing.get("Uploads", [])]
