# syntax=docker/dockerfile:1
# The firesafe platform image: `firesafe <subcommand>` (docker-compose.yml
# runs `db migrate`, `ingest`, `api` and `sim` from it).
#
# Two stages: `build` installs the package and its dependencies into a
# virtualenv; the runtime stage gets only that virtualenv, runs as an
# unprivileged user and carries no build tools, caches or sources.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/firesafe
ENV PATH=/opt/firesafe/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY firesafe ./firesafe
COPY ingest ./ingest
COPY detection ./detection
COPY api ./api
COPY device_sim ./device_sim
COPY storage ./storage
COPY notify ./notify
COPY gateways ./gateways
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 firesafe \
    && useradd --system --uid 10001 --gid firesafe --create-home \
       --home-dir /home/firesafe --shell /usr/sbin/nologin firesafe
COPY --from=build /opt/firesafe /opt/firesafe
ENV PATH=/opt/firesafe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FIRESAFE_API_HOST=0.0.0.0 \
    FIRESAFE_DATA_DIR=/home/firesafe/.firesafe
USER 10001:10001
WORKDIR /home/firesafe
EXPOSE 8000
ENTRYPOINT ["firesafe"]
CMD ["--help"]
