# popgate in a container: Debian 12 (bookworm) with Node.js 24.
#   docker build -t popgate .
#   docker run -d --name popgate \
#     -v /srv/popgate/popgate.toml:/etc/popgate/popgate.toml:ro \
#     -v /srv/popgate/tls:/etc/popgate/tls:ro \
#     -v popgate-data:/var/lib/popgate \
#     -p 25:25 -p 110:110 -p 465:465 -p 587:587 -p 995:995 popgate
# Start the config from contrib/container/popgate.toml. Commands: docker exec popgate popgate user add …
# docs/operations.md explains the ports, the volume and upgrades.
FROM node:24-bookworm-slim

WORKDIR /opt/popgate
# Dependencies first, so a change of popgate's own files reuses this layer. Without the
# devDependencies: the image's Node.js 24 runs popgate (the `node` package is for checkouts).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin/ bin/
COPY src/ src/
RUN ln -s /opt/popgate/bin/popgate.js /usr/local/bin/popgate

# A user of its own; it owns the data volume. Ports below 1024 need no capability where the
# runtime sets net.ipv4.ip_unprivileged_port_start=0 in the container's own network
# namespace, as Docker (since 20.10) and containerd 2 do. Elsewhere (CRI-O, host networking,
# some Podman setups) pass --sysctl net.ipv4.ip_unprivileged_port_start=0, or listen on high
# ports in the config and map them (docs/operations.md).
RUN groupadd --system --gid 2525 popgate \
 && useradd --system --uid 2525 --gid popgate --home-dir /var/lib/popgate --shell /usr/sbin/nologin popgate \
 && mkdir -p /var/lib/popgate /etc/popgate \
 && chown popgate:popgate /var/lib/popgate \
 && chmod 0700 /var/lib/popgate
VOLUME ["/var/lib/popgate"]
ENV POPGATE_CONFIG=/etc/popgate/popgate.toml
USER popgate

# SMTP, POP3, submissions (TLS), submission (STARTTLS), POP3S.
EXPOSE 25 110 465 587 995

# Each listener of the config greets (no curl needed: popgate connects itself). Docker reads
# exit code 1 as unhealthy, and reserves 2; doctor's 2 and 3 become 1.
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 \
  CMD popgate doctor --only listeners --timeout 5s > /dev/null || exit 1

# SIGTERM (docker stop) lets sessions finish for shutdown_grace: give docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--max-semi-space-size=1", "/opt/popgate/bin/popgate.js"]
CMD ["serve"]
