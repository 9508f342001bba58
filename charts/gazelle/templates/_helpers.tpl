{{- define "gazelle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gazelle.fullname" -}}
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

{{- define "gazelle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gazelle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gazelle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gazelle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gazelle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gazelle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gazelle.modelsNamespace" -}}
{{- default .Release.Namespace .Values.models.namespace }}
{{- end }}

{{- define "gazelle.postgres" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{- define "gazelle.secretName" -}}
{{- include "gazelle.fullname" . }}
{{- end }}

{{- define "gazelle.image" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: the registry path of the server image" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "gazelle.publicUrl" -}}
{{- if .Values.server.publicUrl }}
{{- .Values.server.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" (not (empty .Values.ingress.tlsSecret))) .Values.ingress.host }}
{{- else }}
{{- printf "http://127.0.0.1:%d" (int .Values.server.port) }}
{{- end }}
{{- end }}

{{- define "gazelle.checks" -}}
{{- if and (gt (int .Values.replicas) 1) (not (include "gazelle.postgres" .)) }}
{{- fail (printf "replicas: %d needs PostgreSQL (database.url or database.existingSecret): SQLite on one volume serves one replica only" (int .Values.replicas)) }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host" }}
{{- end }}
{{- if and .Values.models.ingressTlsSecret (not .Values.models.ingressHost) }}
{{- fail "models.ingressTlsSecret is the certificate of the models' Ingresses: it needs models.ingressHost" }}
{{- end }}
{{- if and .Values.extraCACerts.configMap .Values.extraCACerts.secret }}
{{- fail "extraCACerts: set configMap or secret, not both" }}
{{- end }}
{{- if not (or .Values.registry.address .Values.registry.existingSecret) }}
{{- fail "registry.address (or registry.existingSecret) is required: the kubernetes target pushes model images there" }}
{{- end }}
{{- end }}
