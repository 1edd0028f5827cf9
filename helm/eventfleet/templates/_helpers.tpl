{{/* eventfleet.name: the chart name, or nameOverride. */}}
{{- define "eventfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* eventfleet.fullname: release-qualified name of every resource (63 characters at most). */}}
{{- define "eventfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* eventfleet.chart: chart name and version, for the helm.sh/chart label. */}}
{{- define "eventfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* eventfleet.selectorLabels: the labels that select this release's pods. */}}
{{- define "eventfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* eventfleet.labels: the common labels of every resource. */}}
{{- define "eventfleet.labels" -}}
helm.sh/chart: {{ include "eventfleet.chart" . }}
{{ include "eventfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* eventfleet.serviceAccountName: the ServiceAccount the pods run as. */}}
{{- define "eventfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* eventfleet.image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "eventfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* eventfleet.cpuCores: resources.requests.cpu in cores ("1500m" -> 1.5, 2 -> 2; none -> 1). */}}
{{- define "eventfleet.cpuCores" -}}
{{- $cpu := toString (dig "requests" "cpu" "1" (.Values.resources | default dict)) }}
{{- if hasSuffix "m" $cpu }}
{{- divf (trimSuffix "m" $cpu | float64) 1000 }}
{{- else }}
{{- float64 $cpu }}
{{- end }}
{{- end }}

{{/* eventfleet.workers: worker processes per pod: .Values.workers, else ceil(CPU request), at least 1. */}}
{{- define "eventfleet.workers" -}}
{{- if .Values.workers }}
{{- .Values.workers | int }}
{{- else }}
{{- max 1 (include "eventfleet.cpuCores" . | float64 | ceil | int) }}
{{- end }}
{{- end }}

{{/* eventfleet.maxUsefulReplicas: ceil(kafka.partitions / workers): more pods would only add idle workers. */}}
{{- define "eventfleet.maxUsefulReplicas" -}}
{{- $workers := include "eventfleet.workers" . | int }}
{{- $partitions := .Values.kafka.partitions | int }}
{{- max 1 (div (add $partitions $workers -1) $workers) }}
{{- end }}

{{/* eventfleet.maxReplicas: the autoscaler ceiling: the value given (refused above the useful maximum) or that maximum. Call with (list $ value key). */}}
{{- define "eventfleet.maxReplicas" -}}
{{- $root := index . 0 }}
{{- $given := index . 1 }}
{{- $key := index . 2 }}
{{- $useful := include "eventfleet.maxUsefulReplicas" $root | int }}
{{- if $given }}
{{- if gt ($given | int) $useful }}
{{- fail (printf "%s=%d is more than ceil(kafka.partitions / workers) = ceil(%d / %s) = %d: the extra pods would have no partition. Fix: lower it, or raise kafka.partitions (after adding partitions to the topic)" $key ($given | int) ($root.Values.kafka.partitions | int) (include "eventfleet.workers" $root) $useful) }}
{{- end }}
{{- $given | int }}
{{- else }}
{{- $useful }}
{{- end }}
{{- end }}

{{/* eventfleet.seconds: a duration of the pipeline file ("500ms", "30s", "1m", "2h") in seconds, as a float. */}}
{{- define "eventfleet.seconds" -}}
{{- $d := toString . | trim }}
{{- if hasSuffix "ms" $d }}
{{- divf (trimSuffix "ms" $d | float64) 1000 }}
{{- else if hasSuffix "s" $d }}
{{- trimSuffix "s" $d | float64 }}
{{- else if hasSuffix "m" $d }}
{{- mulf (trimSuffix "m" $d | float64) 60 }}
{{- else if hasSuffix "h" $d }}
{{- mulf (trimSuffix "h" $d | float64) 3600 }}
{{- else }}
{{- fail (printf "%q is not a duration: write a whole number and a unit: ms, s, m or h" $d) }}
{{- end }}
{{- end }}

{{/* eventfleet.terminationGracePeriodSeconds: the value given, refused unless above flush.interval + fleet.shutdownGrace; else that sum + 15 s. */}}
{{- define "eventfleet.terminationGracePeriodSeconds" -}}
{{- $flush := include "eventfleet.seconds" .Values.flush.interval | float64 }}
{{- $grace := include "eventfleet.seconds" .Values.fleet.shutdownGrace | float64 }}
{{- $needed := addf $flush $grace | ceil | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 15 }}
{{- else if le (.Values.terminationGracePeriodSeconds | int) $needed }}
{{- fail (printf "terminationGracePeriodSeconds=%d must be more than flush.interval + fleet.shutdownGrace (%d s), or pods are killed before their last flush. Fix: raise it, or leave it null" (.Values.terminationGracePeriodSeconds | int) $needed) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* eventfleet.securityProtocol: security.protocol from kafka.sasl and kafka.tls ("" when msk-iam or neither). */}}
{{- define "eventfleet.securityProtocol" -}}
{{- if ne .Values.kafka.auth "msk-iam" }}
{{- if and .Values.kafka.sasl.mechanism .Values.kafka.tls.enabled }}SASL_SSL
{{- else if .Values.kafka.sasl.mechanism }}SASL_PLAINTEXT
{{- else if .Values.kafka.tls.enabled }}SSL
{{- end }}
{{- end }}
{{- end }}

{{/* eventfleet.kafkaConfig: [kafka.config] as a dict: kafka.config plus the settings the chart derives (refused twice). */}}
{{- define "eventfleet.kafkaConfig" -}}
{{- $cfg := deepCopy (.Values.kafka.config | default dict) }}
{{- $derived := dict }}
{{- $protocol := include "eventfleet.securityProtocol" . }}
{{- if $protocol }}{{- $_ := set $derived "security.protocol" $protocol }}{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
{{- $_ := set $derived "sasl.mechanism" .Values.kafka.sasl.mechanism }}
{{- $_ := set $derived "sasl.username" "${KAFKA_SASL_USERNAME}" }}
{{- $_ := set $derived "sasl.password" "${KAFKA_SASL_PASSWORD}" }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
{{- $_ := set $derived "ssl.ca.location" "/etc/kafka-tls/ca/ca.crt" }}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
{{- $_ := set $derived "ssl.certificate.location" "/etc/kafka-tls/client/tls.crt" }}
{{- $_ := set $derived "ssl.key.location" "/etc/kafka-tls/client/tls.key" }}
{{- end }}
{{- range $k, $v := $derived }}
{{- if hasKey $cfg $k }}
{{- fail (printf "kafka.config.%s is set by the chart from kafka.sasl/kafka.tls. Fix: remove it from kafka.config" $k) }}
{{- end }}
{{- $_ := set $cfg $k $v }}
{{- end }}
{{- toJson $cfg }}
{{- end }}

{{/* eventfleet.toml: one TOML value from a YAML value (strings and lists as JSON, which TOML reads). */}}
{{- define "eventfleet.toml" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ toJson . }}{{ end }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/* eventfleet.pipeline: the pipeline file (TOML), rendered from the values. */}}
{{- define "eventfleet.pipeline" -}}
{{- $v := .Values -}}
# Rendered by the eventfleet chart from its values: edit the values, not this file.
# "${...}" in a string is an environment variable of the container (from a Secret), read at start.

[kafka]
bootstrap_servers = {{ $v.kafka.bootstrapServers | toJson }}
topics = {{ $v.kafka.topics | toJson }}
group_id = {{ $v.kafka.groupId | toJson }}
{{- if $v.kafka.auth }}
auth = {{ $v.kafka.auth | toJson }}
{{- end }}
{{- if $v.kafka.region }}
region = {{ $v.kafka.region | toJson }}
{{- end }}
{{- $cfg := include "eventfleet.kafkaConfig" . | fromJson }}
{{- if $cfg }}

[kafka.config]
{{- range $k := keys $cfg | sortAlpha }}
{{ $k | toJson }} = {{ include "eventfleet.toml" (get $cfg $k) }}
{{- end }}
{{- end }}

[schema]
path = "schema.avsc"
decoder = {{ $v.schema.decoder | toJson }}
{{- if $v.glue.enabled }}
registry = "glue"
registry_name = {{ $v.glue.registryName | toJson }}
{{- with $v.glue.region }}
region = {{ . | toJson }}
{{- end }}
{{- with $v.glue.schemaName }}
subject = {{ . | toJson }}
{{- end }}
{{- else if $v.registry.url }}
registry = "${EVENTFLEET_REGISTRY_URL}"
{{- if $v.registry.subject }}
subject = {{ $v.registry.subject | toJson }}
{{- end }}
{{- if eq $v.registry.auth "basic" }}
username = "${EVENTFLEET_REGISTRY_USERNAME}"
password = "${EVENTFLEET_REGISTRY_PASSWORD}"
{{- else if eq $v.registry.auth "bearer" }}
token = "${EVENTFLEET_REGISTRY_TOKEN}"
{{- end }}
{{- if $v.registry.caSecret }}
ca_file = "/etc/registry-tls/ca.crt"
{{- end }}
{{- end }}

[window]
size = {{ $v.window.size | toJson }}
grace = {{ $v.window.grace | toJson }}
{{- if $v.window.timeField }}
time_field = {{ $v.window.timeField | toJson }}
{{- end }}

[aggregate]
group_by = {{ $v.aggregate.groupBy | default list | toJson }}

[aggregate.metrics]
{{- range $k := keys $v.aggregate.metrics | sortAlpha }}
{{ $k }} = {{ get $v.aggregate.metrics $k | toJson }}
{{- end }}

[sink]
type = {{ $v.sink.type | toJson }}
{{- if eq $v.sink.type "sqlite" }}
table = {{ $v.sink.table | toJson }}
path = {{ $v.sink.sqlite.path | toJson }}
{{- else if eq $v.sink.type "postgres" }}
table = {{ $v.sink.table | toJson }}
{{- if $v.sink.postgres.dsnSecret }}
dsn = "${EVENTFLEET_POSTGRES_DSN}"
{{- end }}
{{- else if eq $v.sink.type "kafka" }}
topic = {{ required "sink.kafka.topic is required with sink.type kafka" $v.sink.kafka.topic | toJson }}
{{- end }}
{{- range $k := keys ($v.sink.settings | default dict) | sortAlpha }}
{{ $k | toJson }} = {{ include "eventfleet.toml" (get $v.sink.settings $k) }}
{{- end }}

[flush]
interval = {{ $v.flush.interval | toJson }}

[metrics]
port = {{ $v.metrics.port | int }}

[fleet]
watchdog_timeout = {{ $v.fleet.watchdogTimeout | toJson }}
shutdown_grace = {{ $v.fleet.shutdownGrace | toJson }}
{{- if $v.fleet.maxRss }}
max_rss = {{ $v.fleet.maxRss | toJson }}
{{- end }}

[dlq]
enabled = {{ $v.dlq.enabled }}
{{- if $v.dlq.topic }}
topic = {{ $v.dlq.topic | toJson }}
{{- end }}
{{- if not (kindIs "invalid" $v.dlq.maxConsecutive) }}
max_consecutive = {{ $v.dlq.maxConsecutive | int }}
{{- end }}
{{- if not (kindIs "invalid" $v.dlq.maxInvalidRatio) }}
max_invalid_ratio = {{ $v.dlq.maxInvalidRatio | float64 }}
{{- end }}
ratio_window = {{ $v.dlq.ratioWindow | int }}
{{- if $v.tail.enabled }}

[ingest]
paths = {{ $v.tail.paths | toJson }}
format = {{ $v.tail.format | toJson }}
{{- if $v.tail.pattern }}
pattern = {{ $v.tail.pattern | toJson }}
{{- end }}
topic = {{ $v.tail.topic | default (first $v.kafka.topics) | toJson }}
{{- if $v.tail.key }}
key = {{ $v.tail.key | toJson }}
{{- end }}
start = {{ $v.tail.start | toJson }}
{{- with include "eventfleet.tailId" . }}
id = {{ . | toJson }}
{{- end }}
metrics_port = {{ $v.tail.metricsPort | int }}
{{- end }}
{{ end }}

{{/* eventfleet.checks: refuse value combinations that would run but be wrong. */}}
{{- define "eventfleet.checks" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are both true: KEDA runs its own HPA and the two would fight. Fix: enable one" }}
{{- end }}
{{- if eq .Values.sink.type "sqlite" }}
{{- if or (gt (.Values.replicaCount | int) 1) .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "sink.type sqlite is one file per pod: with more than one pod the results and positions would be split between files. Fix: use sink.type postgres or kafka, or replicaCount 1 without autoscaling" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.kafka.auth "msk-iam") .Values.kafka.sasl.mechanism }}
{{- fail "kafka.auth msk-iam and kafka.sasl.mechanism are both set. Fix: leave kafka.sasl.mechanism empty with msk-iam" }}
{{- end }}
{{- if and (eq .Values.kafka.auth "msk-iam") (not .Values.kafka.region) }}
{{- fail "kafka.auth msk-iam needs kafka.region (the MSK cluster's AWS region)" }}
{{- end }}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) }}
{{- fail "kafka.sasl.mechanism needs kafka.sasl.existingSecret (a Secret with the username and password)" }}
{{- end }}
{{- if and .Values.registry.auth (not .Values.registry.existingSecret) }}
{{- fail "registry.auth needs registry.existingSecret (a Secret with the registry's credentials)" }}
{{- end }}
{{- if and (or .Values.registry.auth .Values.registry.caSecret .Values.registry.subject) (not .Values.registry.url) }}
{{- fail "registry.auth, registry.caSecret and registry.subject need registry.url (the registry's Confluent-compatible URL)" }}
{{- end }}
{{- if and .Values.glue.enabled .Values.registry.url }}
{{- fail "glue.enabled and registry.url are both set: the values are framed by one registry. Fix: keep glue.enabled (AWS Glue) or registry.url (a Confluent-compatible registry)" }}
{{- end }}
{{- if and .Values.registry.existingSecret (not .Values.registry.auth) }}
{{- fail "registry.existingSecret is set but registry.auth is empty: set registry.auth to basic or bearer, or remove the Secret" }}
{{- end }}
{{- end }}

{{/* eventfleet.env: the environment of every eventfleet container (the fleet, the tailer): what pipeline.toml reads. */}}
{{- define "eventfleet.env" -}}
{{- if .Values.kafka.sasl.mechanism }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- with .Values.registry }}
{{- if .url }}
- name: EVENTFLEET_REGISTRY_URL
  value: {{ .url | quote }}
{{- end }}
{{- if eq .auth "basic" }}
- name: EVENTFLEET_REGISTRY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: EVENTFLEET_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- else if eq .auth "bearer" }}
- name: EVENTFLEET_REGISTRY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .tokenKey }}
{{- end }}
{{- end }}
{{- if .Values.kafka.region }}
- name: AWS_REGION
  value: {{ .Values.kafka.region | quote }}
{{- end }}
{{- if eq .Values.sink.type "postgres" }}
{{- with .Values.sink.postgres }}
{{- if .dsnSecret }}
- name: EVENTFLEET_POSTGRES_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .dsnSecret }}
      key: {{ .dsnKey }}
{{- end }}
{{- if .host }}
- name: PGHOST
  value: {{ .host | quote }}
{{- end }}
{{- if .port }}
- name: PGPORT
  value: {{ .port | quote }}
{{- end }}
{{- if .database }}
- name: PGDATABASE
  value: {{ .database | quote }}
{{- end }}
{{- if .user }}
- name: PGUSER
  value: {{ .user | quote }}
{{- end }}
{{- if .sslmode }}
- name: PGSSLMODE
  value: {{ .sslmode | quote }}
{{- end }}
{{- if .passwordSecret }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .passwordSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- end }}
# where `kill -USR2` profiles land (the root filesystem is read-only)
- name: EVENTFLEET_PROFILE_DIR
  value: /tmp
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/* eventfleet.tailName: name of the tailer's Deployment (and its pods' app.kubernetes.io/name). */}}
{{- define "eventfleet.tailName" -}}
{{- printf "%s-tail" (include "eventfleet.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{/* eventfleet.tailSelectorLabels: the labels that select the tailer's pod (never the fleet's, nor the fleet's the tailer's). */}}
{{- define "eventfleet.tailSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-tail" (include "eventfleet.name" . | trunc 58 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: tail
{{- end }}

{{/* eventfleet.tailLabels: the common labels of the tailer's resources. */}}
{{- define "eventfleet.tailLabels" -}}
helm.sh/chart: {{ include "eventfleet.chart" . }}
{{ include "eventfleet.tailSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* eventfleet.tailId: [ingest] id: tail.id, else "<fullname>-tail" on a shared volume, else "" (the pod's name: an emptyDir's files live as long as the pod). */}}
{{- define "eventfleet.tailId" -}}
{{- if .Values.tail.id }}
{{- .Values.tail.id }}
{{- else if not (hasKey (include "eventfleet.tailVolume" . | fromJson) "emptyDir") }}
{{- include "eventfleet.tailName" . }}
{{- end }}
{{- end }}

{{/* eventfleet.tailVolume: the log volume source as JSON: tail.volume, or an emptyDir when it is empty. */}}
{{- define "eventfleet.tailVolume" -}}
{{- .Values.tail.volume | default (dict "emptyDir" dict) | toJson }}
{{- end }}

{{/* eventfleet.tailContainer: the tailer container. Call with (dict "root" $ "sidecar" true) for a native sidecar (an init container that keeps running). Parent charts may include it in their own pod, with eventfleet.tailVolumes. */}}
{{- define "eventfleet.tailContainer" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
- name: tail
  image: {{ include "eventfleet.image" $root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .sidecar }}
  # a native sidecar: started before the app and stopped after it, so that the last lines the
  # app wrote are read and committed
  restartPolicy: Always
  {{- end }}
  command:
    - tini
    - --
    - eventfleet
    - --log-format
    - {{ $v.logFormat }}
    - tail
    - --config
    - /etc/eventfleet/pipeline.toml
    - --metrics-port
    - {{ $v.tail.metricsPort | quote }}
  ports:
    - name: tail-metrics
      containerPort: {{ $v.tail.metricsPort }}
      protocol: TCP
  env:
    {{- include "eventfleet.env" $root | trim | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: tail-metrics
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 6
  readinessProbe:
    httpGet:
      path: /readyz
      port: tail-metrics
    periodSeconds: 5
    timeoutSeconds: 5
  resources:
    {{- toYaml $v.tail.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/eventfleet
      readOnly: true
    - name: tail-tmp
      mountPath: /tmp
    # the tailer never writes, truncates nor deletes a log file
    - name: logs
      mountPath: {{ $v.tail.mountPath }}
      readOnly: true
    {{- if $v.kafka.tls.caSecret }}
    - name: kafka-ca
      mountPath: /etc/kafka-tls/ca
      readOnly: true
    {{- end }}
    {{- if $v.kafka.tls.clientSecret }}
    - name: kafka-client
      mountPath: /etc/kafka-tls/client
      readOnly: true
    {{- end }}
{{- end }}

{{/* eventfleet.tailVolumes: the volumes eventfleet.tailContainer mounts (config, tail-tmp, logs, the Kafka TLS secrets). */}}
{{- define "eventfleet.tailVolumes" -}}
{{- $v := .Values }}
- name: config
  configMap:
    name: {{ include "eventfleet.fullname" . }}
- name: tail-tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
- name: logs
  {{- include "eventfleet.tailVolume" . | fromJson | toYaml | nindent 2 }}
{{- if $v.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.tls.caSecret }}
    items:
      - key: {{ $v.kafka.tls.caKey }}
        path: ca.crt
{{- end }}
{{- if $v.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ $v.kafka.tls.clientSecret }}
    items:
      - key: {{ $v.kafka.tls.certKey }}
        path: tls.crt
      - key: {{ $v.kafka.tls.keyKey }}
        path: tls.key
{{- end }}
{{- end }}

{{/* eventfleet.tailChecks: refuse tail values that would render but tail nothing. */}}
{{- define "eventfleet.tailChecks" -}}
{{- $t := .Values.tail }}
{{- if and (not $t.app) (hasKey (include "eventfleet.tailVolume" . | fromJson) "emptyDir") }}
{{- fail "tail.volume is an emptyDir of the tailer's own pod and tail.app is empty: nothing would write the files. Fix: give tail.app (the container that writes them), or a volume the writers share (e.g. a ReadWriteMany persistentVolumeClaim)" }}
{{- end }}
{{- if and $t.app (eq (toString $t.app.name) "tail") }}
{{- fail "tail.app.name is tail, the tailer's own container name. Fix: name the app container otherwise" }}
{{- end }}
{{- range $t.paths }}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" $t.mountPath)) .) }}
{{- fail (printf "tail.paths %q is not under tail.mountPath %q: the tailer sees the log volume only there. Fix: write the glob under %s/" . $t.mountPath (trimSuffix "/" $t.mountPath)) }}
{{- end }}
{{- end }}
{{- end }}
