#!/usr/bin/env python3
"""Writes the seed corpora of every fuzz target from the client captures in core/tests/fixtures/.

Seeds are named `seed-*` so they are easy to tell from entries the fuzzer found. Deterministic: running it
again rewrites the same files. Usage: python3 fuzz/seeds.py
"""
import pathlib
import struct
import tomllib

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "core" / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def session_input(control, client):
    assert len(control) < 256
    return bytes([len(control)]) + bytes(control) + client


# Control bytes of the session target (see fuzz_targets/session.rs): 3 server config bytes, server count,
# 3 prefill bytes, client/local choice, handshake timeout, then operations.
DEFAULT = []
# Every server rewrites (explicit, from_backend, long explicit) and sends a PROXY header (v2, v1, v2).
REWRITE_PP = [0x05 | 0x40, 0x0E | 0x80, 0x07, 1, 0, 0, 0, 1, 3]
# max_players = 1 with one player already on lobby: the login is refused as full.
FULL = [0x10, 0x10, 0x10, 1, 1, 1, 1, 0, 0]
# Three addresses, six bytes one by one then the rest, the plugin answers late (Allow), two failed dials,
# then connected (a status ping: answered by the proxy itself).
FAILOVER = [0x80, 0x80, 0x80, 0, 0, 0, 0, 2, 5] + [0, 0] * 6 + [0, 255, 1, 8, 0, 0, 1, 0, 1, 0, 0]
# Every dial fails: a login is told the server is unreachable, a status ping is answered by the proxy.
UNREACHABLE = [0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 1, 0, 1]
# The plugin denies.
DENY = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 4]
# A plugin redirects to an existing server (minigames), another to a missing one.
REDIRECT = [0x01, 0x00, 0x02, 1, 0, 0, 0, 0, 0, 0, 255, 0, 5, 2]
MISSING = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 7]
# Half the handshake, then the deadline passes.
TIMEOUT = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 5, 200]

index = tomllib.loads((FIXTURES / "index.toml").read_text())
for fx in index["fixture"]:
    name = fx["file"].removesuffix(".bin")
    data = (FIXTURES / fx["file"]).read_bytes()
    write("handshake", name, data)
    write("session", name, session_input(DEFAULT, data))
    if "login_len" in fx:
        hs = fx["handshake_len"]
        login = data[hs:hs + fx["login_len"]]
        write("login_start", name, struct.pack(">i", fx["protocol"]) + login)
        write("session", name + "-rewrite-pp", session_input(REWRITE_PP, data))
    if name in ("1.20.4-login", "1.8.9-status"):
        write("session", name + "-full", session_input(FULL, data))
        write("session", name + "-failover", session_input(FAILOVER, data))
        write("session", name + "-redirect", session_input(REDIRECT, data))
        write("session", name + "-missing", session_input(MISSING, data))
        write("session", name + "-timeout", session_input(TIMEOUT, data))
        write("session", name + "-unreachable", session_input(UNREACHABLE, data))
        write("session", name + "-deny", session_input(DENY, data))

SERVERS = {
    "minimal": 'domains = ["mc.example.com"]\naddresses = ["127.0.0.1:25566"]\n',
    "full": '''name = "survival"
domains = ["mc.example.com", "*.mc.example.com", "mc?.example.net"]
addresses = ["backend-1:25566", "[::1]:25567", "10.0.0.2:25568"]
proxy_mode = "zero_copy"
send_proxy_protocol = true
proxy_protocol_version = 1
domain_rewrite = { explicit = "internal.host" }
max_players = 20
disconnect_message = "Down for maintenance"

[timeouts]
connect = "2s"
read = "2m"
write = "1h 30m"
''',
    "from-backend": 'domains = ["Lobby.Example.com."]\naddresses = ["lobby.internal:25565"]\n'
                    'domain_rewrite = "from_backend"\n',
    "bad-values": 'domains = ["", "a b"]\naddresses = ["nohost", "h:0", "[::1:1"]\nproxy_mode = "offline"\n'
                  'proxy_protocol_version = 3\nnetwork = "x"\n[timeouts]\nconnect = "5 parsecs"\nread = "0s"\n',
}
MAIN = {
    "main": 'bind = "0.0.0.0:25565"\nservers_dir = "servers"\nhandshake_timeout = "5s"\n'
            'max_connections = 10000\nshutdown_timeout = "30s"\n\n[ip_filter]\n'
            'allow = ["10.0.0.0/8", "::1"]\ndeny = ["203.0.113.0/24"]\nmessage = "no"\n',
    "main-bad": 'bind = "nowhere"\nhandshake_timeout = "x"\n[ip_filter]\nallow = ["10.0.0.0/33"]\n',
}
for name, text in SERVERS.items():
    write("config", name, text.encode())
# Two servers and a main file, NUL-separated (see fuzz_targets/config.rs); a domain claimed twice.
write("config", "two-servers-and-main",
      (SERVERS["full"] + "\0" + SERVERS["minimal"] + "\0" + MAIN["main"]).encode())
write("config", "duplicate-name",
      (SERVERS["minimal"] + "\0" + 'name = "a"\n' + SERVERS["from-backend"] + "\0" + MAIN["main-bad"]).encode())
write("config", "main-only", ("\0\0" + MAIN["main"]).encode())

# Docker containers for the `labels` target (see fuzz_targets/labels.rs): a name line, `@net`, `@port`,
# `@network` lines and `nethergate.*` labels.
LABELS = {
    "minimal": "survival\n@net bridge 172.17.0.2\nnethergate.enable=true\n",
    "full": "lobby\n@net frontend 172.18.0.5\n@net backend 172.19.0.3\n@network backend\n"
            "nethergate.enable=true\nnethergate.domains=lobby.example.com, *.lobby.example.com\n"
            "nethergate.port=25566\nnethergate.name=lobby\nnethergate.proxy_mode=zero_copy\n"
            "nethergate.send_proxy_protocol=true\nnethergate.proxy_protocol_version=1\n"
            "nethergate.domain_rewrite=explicit:internal.lobby\nnethergate.max_players=100\n"
            "nethergate.disconnect_message=Lobby is restarting\nnethergate.timeouts.connect=2s\n"
            "nethergate.timeouts.read=1m\nnethergate.timeouts.write=30s\n",
    "published": "creative\n@net host\n@port 25565 30001 0.0.0.0\n@port 25565 30002 :: udp\n"
                 "nethergate.enable=true\nnethergate.domain_rewrite=from_backend\n",
    "bad": "broken\nnethergate.enable=yes\n",
    "bad-values": "broken\n@net bridge 172.17.0.9\nnethergate.enable=true\nnethergate.port=0\n"
                  "nethergate.max_players=many\nnethergate.timeouts.read=soon\nnethergate.colour=red\n"
                  "nethergate.domain_rewrite=none\nnethergate.domain_rewrite.explicit=x\n",
    "disabled": "off\nnethergate.enable=false\nnethergate.port=x\n",
}
for name, text in LABELS.items():
    write("labels", name, text.encode())
