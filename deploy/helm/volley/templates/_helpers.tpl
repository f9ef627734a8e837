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
The coordinator's in-cluster gRPC address, as workers and clients dial it.
*/}}
{{- define "volley.coordinator.address" -}}
{{- printf "http://%s:%v" (include "volley.coordinator.fullname" .) .Values.coordinator.service.port }}
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
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "redis.url and redis.existingSecret are both set: with a password secret, give redis.host/port/db/tls instead of redis.url (the URL is composed with the password from the secret)" }}
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
{{- .Values.redis.tls | toString }}
{{- end }}
{{- end }}

{{/*
The coordinator's Redis environment. With a password secret, REDIS_USERNAME
and REDIS_PASSWORD come first so that VOLLEY_REDIS can refer to them with
Kubernetes' dependent variable expansion $(NAME).
*/}}
{{- define "volley.redis.env" -}}
{{- $scheme := ternary "rediss" "redis" (.Values.redis.tls | default false) }}
{{- if .Values.redis.existingSecret }}
{{- $user := "" }}
{{- if .Values.redis.usernameKey }}
{{- $user = "$(REDIS_USERNAME)" }}
- name: REDIS_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.usernameKey }}
{{- end }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.passwordKey }}
- name: VOLLEY_REDIS
  value: {{ printf "%s://%s:$(REDIS_PASSWORD)@%s:%v/%v" $scheme $user .Values.redis.host .Values.redis.port .Values.redis.db | quote }}
{{- else if .Values.redis.url }}
- name: VOLLEY_REDIS
  value: {{ .Values.redis.url | quote }}
{{- else }}
- name: VOLLEY_REDIS
  value: {{ printf "%s://%s:%v/%v" $scheme .Values.redis.host .Values.redis.port .Values.redis.db | quote }}
{{- end }}
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
