{{/*
Names and labels, as in the `helm create` skeleton. Names are cut at 63 characters because label
values and many name fields are DNS labels.
*/}}
{{- define "modeldeploy-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
<release>-<chart>, or the release name alone when it already contains the chart name.
*/}}
{{- define "modeldeploy-operator.fullname" -}}
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

{{- define "modeldeploy-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldeploy-operator.labels" -}}
helm.sh/chart: {{ include "modeldeploy-operator.chart" . }}
{{ include "modeldeploy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldeploy
{{- end }}

{{/*
Selector labels never change between upgrades: a Deployment's selector is immutable.
*/}}
{{- define "modeldeploy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modeldeploy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: a digest pins it; otherwise the tag, defaulting to the chart's appVersion.
*/}}
{{- define "modeldeploy-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "modeldeploy-operator.runtimeImage" -}}
{{- default (printf "ghcr.io/modeldeploy/runtime:%s" .Chart.AppVersion) .Values.runtime.image }}
{{- end }}

{{/*
Refuses value combinations the schema cannot express clearly, naming the keys and the fix. The
schema already catches most of them; this also holds with --skip-schema-validation.
*/}}
{{- define "modeldeploy-operator.validate" -}}
{{- if and (not .Values.watch.allNamespaces) (empty .Values.watch.namespaces) }}
{{- fail "watch.namespaces is empty while watch.allNamespaces is false: list the namespaces to watch, or set watch.allNamespaces=true" }}
{{- end }}
{{- if and .Values.watch.allNamespaces (not (empty .Values.watch.namespaces)) }}
{{- fail "watch.namespaces is set while watch.allNamespaces is true: set watch.allNamespaces=false to watch only those namespaces, or empty watch.namespaces" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail (printf "metrics.port and health.port are both %d: give them different ports" (int .Values.metrics.port)) }}
{{- end }}
{{- end }}
