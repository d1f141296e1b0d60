{{/* The release's full name: the release name when it already says "everynode". */}}
{{- define "everynode.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "everynode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "everynode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "everynode.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "everynode.labels" -}}
{{ include "everynode.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: everynode
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "everynode.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Values the controller would not run with stop the install here, each naming the fix. */}}
{{- define "everynode.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicas: %d replicas need leaderElection.enabled=true (without it every replica writes the same pods)" (int .Values.replicas)) -}}
{{- end -}}
{{- if and (eq .Values.target "apps/v1") (not .Values.appsV1.builtinControllerIsOff) -}}
{{- fail "target: apps/v1 runs the built-in DaemonSets: turn kube-controller-manager's DaemonSet controller off first (--controllers=*,-daemonset-controller), then set appsV1.builtinControllerIsOff=true" -}}
{{- end -}}
{{- end -}}
