# muster's images, from one multi-stage build: a release build on Debian 12, run as a
# non-root user on distroless (no shell, no package manager), as Pod Security
# "restricted" wants.
#   docker build --target agent    -t muster/muster-agent:dev .     (the default target)
#   docker build --target operator -t muster/muster-operator:dev .
#   docker build --target example-keyowner -t muster/muster-example-keyowner:dev .
# e2e/kind/load-images.sh builds and loads both.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p node-agent --bin muster-agent \
        -p operator --bin muster-operator \
    && cp target/release/muster-agent target/release/muster-operator /

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /muster-operator /usr/local/bin/muster-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/muster-operator"]

# The example application (examples/keyowner, manifests/examples/keyowner.yaml): one
# Python file using the standard library only.
FROM gcr.io/distroless/python3-debian12:nonroot AS example-keyowner
COPY examples/keyowner/keyowner.py /app/keyowner.py
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/bin/python3", "/app/keyowner.py"]

FROM gcr.io/distroless/cc-debian12:nonroot AS agent
COPY --from=build /muster-agent /usr/local/bin/muster-agent
USER 65532:65532
EXPOSE 2552 8558
ENTRYPOINT ["/usr/local/bin/muster-agent"]
CMD ["run"]
