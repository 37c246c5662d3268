{{/* The chart name, shortened to fit a DNS label. */}}
{{- define "mokv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name: the StatefulSet, the headless Service (so pods are
<fullname>-N.<fullname>.<namespace>.svc.<clusterDomain>) and the ConfigMap. A release named
"mokv" gives "mokv", the name the server certificate of certs/server-csr.json expects.
*/}}
{{- define "mokv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mokv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mokv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mokv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mokv.labels" -}}
helm.sh/chart: {{ include "mokv.chart" . }}
{{ include "mokv.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mokv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mokv.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mokv.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "mokv.gossipSecretName" -}}
{{- default .Values.tls.secretName .Values.gossip.secretName -}}
{{- end -}}

{{/*
bootstrap-expect: .Values.bootstrapExpect when set; else the value the installed ConfigMap
holds (so an upgrade that scales never changes it); else .Values.replicas (first install).
*/}}
{{- define "mokv.bootstrapExpect" -}}
{{- if .Values.bootstrapExpect -}}
{{- .Values.bootstrapExpect | int -}}
{{- else -}}
{{- $previous := "" -}}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "mokv.fullname" .) -}}
{{- if $cm -}}
{{- if $cm.data -}}
{{- $previous = index $cm.data "bootstrap-expect" | default "" -}}
{{- end -}}
{{- end -}}
{{- if $previous -}}
{{- $previous | int -}}
{{- else -}}
{{- .Values.replicas | int -}}
{{- end -}}
{{- end -}}
{{- end -}}
