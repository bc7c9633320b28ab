"""``invsaga certs DIR``: a development CA and one certificate per process (and one client).

Each certificate's subject common name is its identity (``coordinator``, ``inventory``, ...,
``client`` for operators and tests): under mutual TLS the participants serve saga steps only
to the ``coordinator`` identity. The subject alternative names are what clients check the
host against: ``localhost``, ``127.0.0.1``, ``::1``, and the service's Kubernetes names
(``<svc>``, ``<svc>-headless``, each also under ``.<namespace>``, ``.<namespace>.svc`` and
``.<namespace>.svc.cluster.local``). For development only: keys are written unencrypted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from invsaga.runtime.config import SERVICES

CLIENT = "client"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    common_name: str, key: ec.EllipticCurvePrivateKey, days: int, issuer: x509.Name | None = None
) -> x509.CertificateBuilder:
    """A certificate of ``key`` for ``common_name`` (organization invsaga) by ``issuer`` (None:
    itself), valid from five minutes ago for ``days``; its extensions are the caller's to add."""
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "invsaga"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def service_dns_names(name: str, namespace: str) -> list[str]:
    names = ["localhost"]
    for host in (name, f"{name}-headless"):
        names += [host, f"{host}.{namespace}", f"{host}.{namespace}.svc", f"{host}.{namespace}.svc.cluster.local"]
    return names


def make_ca(
    common_name: str = "invsaga development CA", days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    cert = (
        _builder(common_name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    identity: str,
    dns_names: Sequence[str],
    days: int = 365,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate for ``identity`` (its CN), valid as both TLS server and client."""
    key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        _builder(identity, key, days, ca_cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_pair(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    _write(directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / f"{stem}-key.pem", _pem_key(key), private=True)


def make_certs(
    directory: Path,
    *,
    namespace: str = "invsaga",
    extra_dns: Sequence[str] = (),
    days: int = 365,
    identities: Sequence[str] = (*SERVICES, CLIENT),
) -> list[Path]:
    """Write ``ca.pem``/``ca-key.pem`` and ``<identity>.pem``/``<identity>-key.pem`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(days=days)
    write_pair(directory, "ca", ca_key, ca_cert)
    for identity in identities:
        key, cert = issue(ca_key, ca_cert, identity, [*service_dns_names(identity, namespace), *extra_dns], days)
        write_pair(directory, identity, key, cert)
    return sorted(directory.glob("*.pem"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="where to write ca.pem and <name>.pem/<name>-key.pem")
    parser.add_argument("--namespace", default="invsaga", help="Kubernetes namespace in the service DNS names")
    parser.add_argument("--dns", action="append", default=[], help="extra DNS name for every certificate")
    parser.add_argument("--days", type=int, default=365)


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    written = make_certs(directory, namespace=args.namespace, extra_dns=args.dns, days=args.days)
    print(
        f"wrote {len(written)} files to {directory}: CA ca.pem, and for each of {', '.join((*SERVICES, CLIENT))}"
        " <name>.pem and <name>-key.pem"
    )
    print(
        "run a process with INVSAGA_TLS_CA=ca.pem INVSAGA_TLS_CERT=<name>.pem INVSAGA_TLS_KEY=<name>-key.pem"
        " (and INVSAGA_TLS_CLIENT_AUTH=require for mutual TLS)"
    )
    return 0
