{{/* Chart name, at most 63 characters. */}}
{{- define "pia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name. */}}
{{- define "pia.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "pia.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "pia.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pia.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pia.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pia.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pia.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "pia.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pia.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pia.associationsConfigMap" -}}
{{- default (printf "%s-associations" (include "pia.fullname" .)) .Values.selfManaged.associations.configMap.name }}
{{- end }}

{{- define "pia.jwksConfigMap" -}}
{{- default (printf "%s-jwks" (include "pia.fullname" .)) .Values.selfManaged.jwks.configMap.name }}
{{- end }}

{{/* Fails the render on values that cannot work. */}}
{{- define "pia.validate" -}}
{{- if not .Values.clusterName }}
{{- fail "clusterName is required" }}
{{- end }}
{{- if not .Values.region }}
{{- fail "region is required (the agent's AWS_REGION)" }}
{{- end }}
{{- if not (has .Values.mode (list "eks" "self-managed")) }}
{{- fail (printf "mode must be eks or self-managed, not %q" .Values.mode) }}
{{- end }}
{{- if eq .Values.mode "self-managed" }}
{{- if not .Values.selfManaged.issuer }}
{{- fail "selfManaged.issuer is required in self-managed mode" }}
{{- end }}
{{- $url := .Values.selfManaged.jwks.url }}
{{- $cm := or .Values.selfManaged.jwks.configMap.create .Values.selfManaged.jwks.configMap.name }}
{{- if and $url $cm }}
{{- fail "self-managed mode takes at most one of selfManaged.jwks.url and selfManaged.jwks.configMap (neither: the issuer's discovery document)" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: this project publishes no image; build deploy/Dockerfile and push it to your registry (deploy/README.md, The image)" }}
{{- end }}
{{- end }}
