"""A real OpenLDAP server (Debian's slapd) for tests: its own config folder and database
under /var/tmp, loaded with slapadd, listening on a loopback port only."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apache_server import free_port, running

SUFFIX = "dc=example,dc=org"
BIND_DN = f"cn=apache,{SUFFIX}"
BIND_PASSWORD = "apache-bind-pw"
# the directory's people: a password of their own (not the htpasswd one) and groups
PEOPLE = {"alice": ("alice-ldap", ["developers"]), "bob": ("bob-ldap", ["developers"]),
          "carol": ("carol-ldap", ["qc"]), "dave": ("dave-ldap", [])}
GROUPS = ("developers", "qc")


@dataclass
class Directory:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return (f"ldap://127.0.0.1:{self.port}/ou=people,{SUFFIX}"
                "?uid?sub?(objectClass=inetOrgPerson)")

    @staticmethod
    def group_dn(group: str) -> str:
        return f"cn={group},ou=groups,{SUFFIX}"

    def config(self, password_file: Path) -> str:
        """The [ldap] section of a pypi-fallback config for this directory."""
        groups = "".join(f'{g} = "{self.group_dn(g)}"\n' for g in GROUPS)
        return (f'[ldap]\nurl = "{self.url}"\nbind_dn = "{BIND_DN}"\n'
                f'bind_password_file = "{password_file}"\n\n[ldap.groups]\n{groups}')


def _hash(password: str) -> str:
    return subprocess.run(["slappasswd", "-s", password], capture_output=True, text=True,
                          check=True).stdout.strip()


def _ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\n"
        "dc: example\n",
        f"dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: apache\nuserPassword: {_hash(BIND_PASSWORD)}\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
    ]
    for user, (password, _) in PEOPLE.items():
        entries.append(f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
                       f"uid: {user}\ncn: {user}\nsn: {user}\n"
                       f"userPassword: {_hash(password)}\n")
    for group in GROUPS:
        members = [u for u, (_, gs) in PEOPLE.items() if group in gs]
        lines = "".join(f"member: uid={u},ou=people,{SUFFIX}\n" for u in members)
        entries.append(f"dn: {Directory.group_dn(group)}\nobjectClass: groupOfNames\n"
                       f"cn: {group}\n{lines}")
    return "\n".join(entries)


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {home}/slapd.pid
argsfile {home}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
directory {home}/db
access to attrs=userPassword by anonymous auth by self read by * none
access to * by dn.exact="{bind_dn}" read by self read by * none
"""


@contextmanager
def running_directory() -> Iterator[Directory]:
    home = Path(tempfile.mkdtemp(prefix="pf-ldap-", dir="/var/tmp"))
    try:
        (home / "db").mkdir()
        conf = home / "slapd.conf"
        conf.write_text(SLAPD_CONF.format(home=home, suffix=SUFFIX, bind_dn=BIND_DN))
        (home / "data.ldif").write_text(_ldif())
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(home / "data.ldif")],
                       check=True, capture_output=True, timeout=60)
        port = free_port()
        with running(["slapd", "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
                     port):
            yield Directory(home, port)
    finally:
        shutil.rmtree(home, ignore_errors=True)
