{{/*
Expand the name of the chart.
*/}}
{{- define "volley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
Component names append "-coordinator" (12 chars) or "-worker-metrics" (15), so the base is cut at 48.
*/}}
{{- define "volley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "volley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "volley.labels" -}}
helm.sh/chart: {{ include "volley.chart" . }}
{{ include "volley.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: volley
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "volley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "volley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "volley.componentLabels" -}}
{{ include "volley.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "volley.componentSelectorLabels" -}}
{{ include "volley.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Create the name of the service account to use.
*/}}
{{- define "volley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "volley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Resource names.
*/}}
{{- define "volley.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "volley.fullname" .) }}
{{- end }}

{{- define "volley.worker.fullname" -}}
{{- printf "%s-worker" (include "volley.fullname" .) }}
{{- end }}

{{- define "volley.configName" -}}
{{- printf "%s-config" (include "volley.fullname" .) }}
{{- end }}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "volley.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The coordinator's in-cluster gRPC address, as workers and clients dial it:
https:// with TLS.
*/}}
{{- define "volley.coordinator.address" -}}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.tls.enabled) (include "volley.coordinator.fullname" .) .Values.coordinator.service.port }}
{{- end }}

{{/*
A listen address: bindAddress:port.
*/}}
{{- define "volley.listen" -}}
{{- printf "%s:%v" .root.Values.bindAddress .port }}
{{- end }}

{{/*
Checks on value combinations that the JSON schema cannot express. Included
by every template that depends on them, so a bad combination fails the
render whatever is rendered.
*/}}
{{- define "volley.validate" -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true: enable at most one worker autoscaler (KEDA on the ready queue, or the CPU HPA)" }}
{{- end }}
{{- if and .Values.redis.url (regexMatch "^rediss?://[^/]*:[^/@]*@" .Values.redis.url) }}
{{- fail "redis.url holds a password: put it in a Secret and give redis.passwordSecret.name instead (the URL is in the pod spec in plain text)" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.tls.enabled (hasPrefix "redis://" .Values.redis.url) }}
{{- fail "redis.tls.enabled is true but redis.url is redis://: use a rediss:// URL for TLS" }}
{{- end }}
{{- if and (or .Values.redis.tls.caSecret.name .Values.redis.tls.caConfigMap.name .Values.redis.tls.clientCertSecret) (ne (include "volley.redis.tls" .) "true") }}
{{- fail "redis.tls.caSecret / caConfigMap / clientCertSecret are set but Redis is not reached with TLS: set redis.tls.enabled=true (or a rediss:// redis.url)" }}
{{- end }}
{{- if and .Values.redis.tls.caSecret.name .Values.redis.tls.caConfigMap.name }}
{{- fail "redis.tls.caSecret.name and redis.tls.caConfigMap.name are both set: give the Redis CA from one of them" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.enabled needs a certificate: set tls.existingSecret (keys tls.crt, tls.key, ca.crt) or tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.existingSecret .Values.tls.certManager.issuerRef.name }}
{{- fail "tls.existingSecret and tls.certManager.issuerRef.name are both set: take the certificate from one of them" }}
{{- end }}
{{- $args := .Values.coordinator.extraArgs | join " " }}
{{- $envAuth := dig "VOLLEY_AUTH" "" .Values.config.extraEnv | toString }}
{{- range .Values.coordinator.extraEnv }}{{ if eq .name "VOLLEY_AUTH" }}{{ $envAuth = (.value | default "" | toString) }}{{ end }}{{ end }}
{{- if or (regexMatch "(^| )--auth(=| +)none( |$)" $args) (eq $envAuth "none") }}
{{- fail "--auth none (coordinator.extraArgs, or VOLLEY_AUTH in config.extraEnv / coordinator.extraEnv) turns authentication off: the chart never does that (the coordinator refuses it on a non-loopback address anyway); use tokens" }}
{{- end }}
{{- if and .Values.tls.mtls (not .Values.tls.enabled) }}
{{- fail "tls.mtls needs tls.enabled: client certificates are part of TLS" }}
{{- end }}

{{- if and .Values.autoscaling.hpa.enabled (not (dig "requests" "cpu" "" .Values.worker.resources)) }}
{{- fail "autoscaling.hpa.enabled needs worker.resources.requests.cpu: CPU utilization is measured against it" }}
{{- end }}
{{- if and .Values.redis.url (not (or (hasPrefix "redis://" .Values.redis.url) (hasPrefix "rediss://" .Values.redis.url))) }}
{{- fail "redis.url must start with redis:// or rediss://" }}
{{- end }}
{{- end }}

{{/*
Redis connection parts for KEDA (host:port, db, tls), from redis.url when
set, else from redis.host/port/db/tls.
*/}}
{{- define "volley.redis.address" -}}
{{- if .Values.redis.url }}
{{- (urlParse .Values.redis.url).host }}
{{- else }}
{{- printf "%s:%v" .Values.redis.host .Values.redis.port }}
{{- end }}
{{- end }}

{{- define "volley.redis.db" -}}
{{- if .Values.redis.url }}
{{- default "0" (trimPrefix "/" (urlParse .Values.redis.url).path) }}
{{- else }}
{{- .Values.redis.db | toString }}
{{- end }}
{{- end }}

{{- define "volley.redis.tls" -}}
{{- if .Values.redis.url }}
{{- eq (urlParse .Values.redis.url).scheme "rediss" | toString }}
{{- else }}
{{- .Values.redis.tls.enabled | toString }}
{{- end }}
{{- end }}

{{/*
Redis's port and ACL user name, from redis.url when set.
*/}}
{{- define "volley.redis.port" -}}
{{- if .Values.redis.url }}
{{- $host := (urlParse .Values.redis.url).host }}
{{- ternary (last (splitList ":" $host)) "6379" (contains ":" $host) }}
{{- else }}
{{- .Values.redis.port | toString }}
{{- end }}
{{- end }}

{{- define "volley.redis.username" -}}
{{- if .Values.redis.url }}
{{- (urlParse .Values.redis.url).userinfo }}
{{- else }}
{{- .Values.redis.username }}
{{- end }}
{{- end }}

{{/*
The coordinator's Redis URL: redis.url, or composed from host/port/db/
username/tls. It never holds the password (that is a mounted file).
*/}}
{{- define "volley.redis.url" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else }}
{{- $scheme := ternary "rediss" "redis" .Values.redis.tls.enabled }}
{{- $user := ternary (printf "%s@" (.Values.redis.username | urlquery)) "" (ne .Values.redis.username "") }}
{{- printf "%s://%s%s:%v/%v" $scheme $user .Values.redis.host .Values.redis.port .Values.redis.db }}
{{- end }}
{{- end }}

{{/*
Where secrets and certificates are mounted. Fixed file names: the Secret
keys are mapped onto them (items), whatever the keys are called.
*/}}
{{- define "volley.paths.adminToken" -}}/var/run/volley/admin-token/token{{- end }}
{{- define "volley.paths.workerToken" -}}/var/run/volley/token/token{{- end }}
{{- define "volley.paths.tls" -}}/etc/volley/tls{{- end }}
{{- define "volley.paths.redisPassword" -}}/var/run/volley/redis/password{{- end }}
{{- define "volley.paths.redisTls" -}}/etc/volley/redis-tls{{- end }}

{{/*
Secret names.
*/}}
{{- define "volley.adminToken.secretName" -}}
{{- default (printf "%s-admin-token" (include "volley.fullname" .)) .Values.adminToken.existingSecret }}
{{- end }}

{{- define "volley.workerToken.secretName" -}}
{{- default (include "volley.adminToken.secretName" .) .Values.workerToken.existingSecret }}
{{- end }}

{{- define "volley.workerToken.key" -}}
{{- ternary .Values.workerToken.key .Values.adminToken.key (ne .Values.workerToken.existingSecret "") }}
{{- end }}

{{- define "volley.tls.secretName" -}}
{{- default (printf "%s-coordinator-tls" (include "volley.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/*
The Secret with the workers' (and the test pod's) client certificate under
mTLS: their own, or a cert-manager one of their own, else the coordinators'.
*/}}
{{- define "volley.tls.workerSecretName" -}}
{{- if .Values.tls.workerExistingSecret }}
{{- .Values.tls.workerExistingSecret }}
{{- else if .Values.tls.certManager.issuerRef.name }}
{{- printf "%s-worker-tls" (include "volley.fullname" .) }}
{{- else }}
{{- include "volley.tls.secretName" . }}
{{- end }}
{{- end }}

{{/*
The TLS client flags of a `volley` client (worker, test pod, probe): the CA,
and with mTLS the client certificate.
*/}}
{{- define "volley.tls.clientArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-ca
- {{ printf "%s/ca.crt" (include "volley.paths.tls" .) | quote }}
{{- if .Values.tls.mtls }}
- --tls-cert
- {{ printf "%s/tls.crt" (include "volley.paths.tls" .) | quote }}
- --tls-key
- {{ printf "%s/tls.key" (include "volley.paths.tls" .) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The `tls` volume of a TLS client pod (worker, test pod): only ca.crt from
the coordinators' Secret, or with mTLS the whole client certificate Secret.
Never the coordinators' private key unless the client Secret is theirs.
*/}}
{{- define "volley.tls.clientVolume" -}}
- name: tls
  secret:
    {{- if .Values.tls.mtls }}
    secretName: {{ include "volley.tls.workerSecretName" . }}
    defaultMode: 288
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
    {{- else }}
    secretName: {{ include "volley.tls.secretName" . }}
    defaultMode: 288
    items:
      - {key: ca.crt, path: ca.crt}
    {{- end }}
{{- end }}

{{/*
A secret volume holding one key as a file of a fixed name, readable by the
pod's group (fsGroup) only. Call with (dict "name" "admin-token" "secret" NAME "key" KEY "path" "token").
*/}}
{{- define "volley.secretVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secret }}
    # 0440: the container's user reads it through fsGroup; nobody else.
    defaultMode: 288
    items:
      - key: {{ .key }}
        path: {{ .path }}
{{- end }}

{{/*
The coordinator's readiness probe: the kubelet's plain gRPC probe, or, when
the listener serves TLS (which the kubelet's gRPC probe cannot speak),
`volley health` run in the container over localhost. (Workers keep a
plaintext health listener, --health-plaintext.) Call with
(dict "root" $ "port" PORT "tls" BOOL "flag" "--coordinator" "timing" PROBE).
*/}}
{{- define "volley.readinessProbe" -}}
{{- if .tls }}
exec:
  command:
    - volley
    - health
    - {{ .flag }}
    - {{ printf "https://localhost:%v" .port | quote }}
    - --timeout
    - {{ printf "%vs" (default 1 .timing.timeoutSeconds) | quote }}
    {{- with include "volley.tls.clientArgs" .root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
{{- else }}
grpc:
  port: {{ .port }}
{{- end }}
{{- toYaml .timing | nindent 0 }}
{{- end }}

{{/*
Pod scheduling: a component's own nodeSelector/affinity/tolerations replace
the top-level ones when non-empty. Call with (dict "root" $ "values" .Values.worker "component" "worker").
*/}}
{{- define "volley.scheduling" -}}
{{- with (default .root.Values.nodeSelector .values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.affinity .values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.tolerations .values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
{{- $selector := dict "matchLabels" (include "volley.componentSelectorLabels" (dict "root" .root "component" .component) | fromYaml) }}
{{- $constraints := list }}
{{- range .values.topologySpreadConstraints }}
{{- $constraints = append $constraints (ternary . (merge (dict "labelSelector" $selector) .) (hasKey . "labelSelector")) }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Common pod metadata annotations and labels. Call with (dict "root" $ "values" .Values.worker "component" "worker").
*/}}
{{- define "volley.podMetadata" -}}
annotations:
  checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
labels:
  {{- include "volley.componentLabels" (dict "root" .root "component" .component) | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
