{{/* Name of the operator's objects: "<release>-operator" (release "muster": muster-operator,
as manifests/operator.yaml names them), or the release name when it ends in "operator". */}}
{{- define "muster.fullname" -}}
{{- if hasSuffix "operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "muster.selectorLabels" -}}
app.kubernetes.io/name: muster-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object the chart creates. */}}
{{- define "muster.labels" -}}
{{ include "muster.selectorLabels" . }}
app.kubernetes.io/part-of: muster
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "muster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "muster.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "muster.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The subject of the operator's role bindings. */}}
{{- define "muster.subject" -}}
- kind: ServiceAccount
  name: {{ include "muster.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/* The watched namespaces, comma-separated (watchNamespaces and watchNamespace, each
once, sorted); empty: every namespace. */}}
{{- define "muster.namespaces" -}}
{{- $all := concat (default list .Values.watchNamespaces) (compact (list .Values.watchNamespace)) -}}
{{- $all | uniq | sortAlpha | join "," -}}
{{- end -}}
