{{/* Chart name, at most 63 characters: eks-pod-identity-agent by default (nameOverride). */}}
{{- define "pia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name: eks-pod-identity-agent by default (fullnameOverride). */}}
{{- define "pia.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "pia.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "pia.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "<name>-<suffix>" within 63 characters, the name shortened first; dict "name" "suffix". */}}
{{- define "pia.suffixed" -}}
{{- if .suffix }}
{{- printf "%s-%s" (.name | trunc (int (sub 62 (len .suffix))) | trimSuffix "-") .suffix }}
{{- else }}
{{- .name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Selector labels of one DaemonSet; dict "top" (the root context) "suffix" (its nameSuffix). */}}
{{- define "pia.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pia.suffixed" (dict "name" (include "pia.name" .top) "suffix" .suffix) }}
app.kubernetes.io/instance: {{ .top.Release.Name }}
{{- end }}

{{/* Labels of the objects; dict "top" "suffix" as above. */}}
{{- define "pia.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .top.Chart.Name .top.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pia.selectorLabels" . }}
app.kubernetes.io/version: {{ .top.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .top.Release.Service }}
app: {{ include "pia.name" .top }}
{{- end }}

{{/* Labels every agent pod of the release has, whichever DaemonSet: what the metrics Service
selects. */}}
{{- define "pia.podLabels" -}}
app: {{ include "pia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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

{{/* The agent's AWS region: `region`, else AWS_REGION of an `env` map (the reference chart's
way). */}}
{{- define "pia.region" -}}
{{- if .Values.region }}
{{- .Values.region }}
{{- else if kindIs "map" .Values.env }}
{{- .Values.env.AWS_REGION | default "" }}
{{- end }}
{{- end }}

{{/* The node file named in AWS_CA_BUNDLE and mounted, or nothing: `caBundle`, else the reference
chart's path in isolated ("-iso") regions; nothing when `env` sets AWS_CA_BUNDLE itself. */}}
{{- define "pia.caBundle" -}}
{{- $own := and (kindIs "map" .Values.env) (hasKey .Values.env "AWS_CA_BUNDLE") }}
{{- if not $own }}
{{- if .Values.caBundle }}
{{- .Values.caBundle }}
{{- else if contains "-iso" (include "pia.region" .) }}
{{- print "/etc/pki/tls/certs/ca-bundle.crt" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when one of `names` is among the flags in `given`; dict "given" "names". */}}
{{- define "pia.given" -}}
{{- range .names }}
{{- if has . $.given }}true{{ end }}
{{- end }}
{{- end }}

{{/* Flag names among additionalArgs keys and extraArgs items; dict "map" "list". */}}
{{- define "pia.givenFlags" -}}
{{- $given := list }}
{{- range $flag, $_ := .map }}
{{- $given = append $given $flag }}
{{- end }}
{{- range .list }}
{{- $given = append $given (regexReplaceAll "=.*$" (toString .) "") }}
{{- end }}
{{- toJson $given }}
{{- end }}

{{/* additionalArgs as the reference chart renders them: the key, then its value unless empty. */}}
{{- define "pia.additionalArgs" -}}
{{- range $flag, $value := . }}
- {{ $flag | quote }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- {{ $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Fails the render on values that cannot work. */}}
{{- define "pia.validate" -}}
{{- if not .Values.clusterName }}
{{- fail "clusterName is required" }}
{{- end }}
{{- if not (or (kindIs "map" .Values.env) (kindIs "slice" .Values.env) (kindIs "invalid" .Values.env)) }}
{{- fail "env must be a map of name to value (or a list of Kubernetes env entries)" }}
{{- end }}
{{- if not (include "pia.region" .) }}
{{- fail "region is required (the agent's AWS_REGION; env.AWS_REGION works too)" }}
{{- end }}
{{- if and .Values.region (kindIs "map" .Values.env) .Values.env.AWS_REGION (ne (toString .Values.env.AWS_REGION) (toString .Values.region)) }}
{{- fail (printf "region %q and env.AWS_REGION %q differ; set one" .Values.region .Values.env.AWS_REGION) }}
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
{{- range $place, $args := dict "agent.additionalArgs" .Values.agent.additionalArgs "init.additionalArgs" .Values.init.additionalArgs }}
{{- if not (or (kindIs "map" $args) (kindIs "invalid" $args)) }}
{{- fail (printf "%s must be a map of flag to value, such as {\"-v\": \"debug\"}" $place) }}
{{- end }}
{{- end }}
{{- $names := dict }}
{{- range $key, $ds := .Values.daemonsets }}
{{- if and $ds $ds.create }}
{{- if not (or (kindIs "map" $ds.additionalArgs) (kindIs "invalid" $ds.additionalArgs)) }}
{{- fail (printf "daemonsets.%s.additionalArgs must be a map of flag to value" $key) }}
{{- end }}
{{- if not (or (kindIs "map" $ds.env) (kindIs "invalid" $ds.env)) }}
{{- fail (printf "daemonsets.%s.env must be a map of name to value" $key) }}
{{- end }}
{{- $name := include "pia.suffixed" (dict "name" (include "pia.fullname" $) "suffix" $ds.nameSuffix) }}
{{- if hasKey $names $name }}
{{- fail (printf "daemonsets.%s and daemonsets.%s would both be named %s; give them different nameSuffix values" (get $names $name) $key $name) }}
{{- end }}
{{- $_ := set $names $name $key }}
{{- end }}
{{- end }}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: this project publishes no image; build deploy/Dockerfile and push it to your registry (deploy/README.md, The image)" }}
{{- end }}
{{- end }}
