#!/usr/bin/env bash
# Once per AWS account and region, before the first `ray up cluster/aws.yaml`: what the cluster
# file names but should not create itself. Safe to run again. Needs the AWS CLI
# (`pip install awscli`), logged in as someone who may create buckets, security groups and IAM
# roles.
#
#   bash cluster/aws-setup.sh [CLUSTER_FILE]   # default cluster/aws.yaml; the region is the
#                                              # file's, or $AWS_REGION where set (then pinned)
#
# Creates:
#   s3://mri-sr-<account>           data (--data s3://mri-sr-<account>/data/), Ray results and
#                                   checkpoints (ray/), MLflow artifacts (mlflow/); private, encrypted
#   security group mri-sr-cluster   SSH from this machine's public address only; every port
#                                   between the cluster's own nodes; nothing else
#   instance profile mri-sr-worker  read/write that bucket, nothing more
#   instance profile mri-sr-head    the same, plus launching instances tagged as this cluster's
#                                   and starting, stopping and terminating only those (the
#                                   autoscaler), and handing mri-sr-worker to them
#   the spot service-linked role    which a first spot request in a fresh account needs
# and pins into the cluster file its region, the default VPC's subnets, the group's id and the
# current Deep Learning AMI (AWS's public SSM parameter), so that `ray up` uses exactly these.
set -euo pipefail

CLUSTER_FILE=${1:-$(dirname "$0")/aws.yaml}
FILE_REGION=$(sed -n 's/^  region: *\([a-z0-9-]*\).*/\1/p' "$CLUSTER_FILE")
REGION=${AWS_REGION:-$FILE_REGION}
CLUSTER_NAME=$(sed -n 's/^cluster_name: *\([A-Za-z0-9_-]*\).*/\1/p' "$CLUSTER_FILE")
# The Deep Learning AMI with the NVIDIA driver, Docker and the NVIDIA container toolkit.
DLAMI_PARAMETER=${DLAMI_PARAMETER:-/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id}
export AWS_DEFAULT_REGION=$REGION
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
BUCKET=mri-sr-$ACCOUNT
MY_IP=${MY_IP:-$(curl -fsS https://checkip.amazonaws.com | tr -d '[:space:]')}
echo "region $REGION, cluster $CLUSTER_NAME, account $ACCOUNT"

echo "bucket s3://$BUCKET"
if ! aws s3api head-bucket --bucket "$BUCKET" 2>/dev/null; then
  if [ "$REGION" = us-east-1 ]; then
    aws s3api create-bucket --bucket "$BUCKET"
  else
    aws s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration "LocationConstraint=$REGION"
  fi
fi
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'

echo "security group mri-sr-cluster: SSH from $MY_IP/32 only"
VPC=$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)
if [ "$VPC" = None ]; then
  echo "error: region $REGION has no default VPC; make one (aws ec2 create-default-vpc) and run this again" >&2
  exit 1
fi
SUBNETS=$(aws ec2 describe-subnets --filters Name=vpc-id,Values="$VPC" Name=default-for-az,Values=true \
  --query 'Subnets[].SubnetId' --output text | tr -s '[:space:]' ',' | sed 's/,$//')
SG=$(aws ec2 describe-security-groups --filters Name=group-name,Values=mri-sr-cluster Name=vpc-id,Values="$VPC" \
  --query 'SecurityGroups[0].GroupId' --output text)
if [ "$SG" = None ]; then
  SG=$(aws ec2 create-security-group --group-name mri-sr-cluster --vpc-id "$VPC" \
    --description "mri-sr Ray cluster: SSH from the owner, all ports between members" --query GroupId --output text)
  aws ec2 authorize-security-group-ingress --group-id "$SG" \
    --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]"
fi
aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 22 --cidr "$MY_IP/32" 2>/dev/null \
  || echo "  (SSH from $MY_IP/32 already allowed)"

TRUST='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
S3_POLICY=$(cat <<JSON
{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":["s3:ListBucket","s3:GetBucketLocation"],"Resource":"arn:aws:s3:::$BUCKET"},
  {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload"],
   "Resource":"arn:aws:s3:::$BUCKET/*"}]}
JSON
)
# The autoscaler may launch instances only tagged as this cluster's (Ray tags every node with
# ray-cluster-name), and start, stop, terminate and retag only those.
AUTOSCALER_POLICY=$(cat <<JSON
{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"},
  {"Effect":"Allow","Action":"ec2:RunInstances","Resource":"arn:aws:ec2:$REGION:$ACCOUNT:instance/*",
   "Condition":{"StringEquals":{"aws:RequestTag/ray-cluster-name":"$CLUSTER_NAME"}}},
  {"Effect":"Allow","Action":"ec2:RunInstances","Resource":[
   "arn:aws:ec2:$REGION:$ACCOUNT:volume/*","arn:aws:ec2:$REGION:$ACCOUNT:network-interface/*",
   "arn:aws:ec2:$REGION:$ACCOUNT:subnet/*","arn:aws:ec2:$REGION:$ACCOUNT:security-group/$SG",
   "arn:aws:ec2:$REGION:$ACCOUNT:key-pair/*","arn:aws:ec2:$REGION::image/*",
   "arn:aws:ec2:$REGION:$ACCOUNT:spot-instances-request/*"]},
  {"Effect":"Allow","Action":"ec2:CreateTags","Resource":"arn:aws:ec2:$REGION:$ACCOUNT:*/*",
   "Condition":{"StringEquals":{"ec2:CreateAction":"RunInstances"}}},
  {"Effect":"Allow","Action":["ec2:CreateTags","ec2:StartInstances","ec2:StopInstances","ec2:TerminateInstances"],
   "Resource":"arn:aws:ec2:$REGION:$ACCOUNT:instance/*",
   "Condition":{"StringEquals":{"ec2:ResourceTag/ray-cluster-name":"$CLUSTER_NAME"}}},
  {"Effect":"Allow","Action":["iam:PassRole","iam:GetInstanceProfile"],
   "Resource":["arn:aws:iam::$ACCOUNT:role/mri-sr-worker","arn:aws:iam::$ACCOUNT:instance-profile/mri-sr-worker"]}]}
JSON
)

profile() {  # profile NAME POLICY...: a role with these inline policies, in an instance profile of the same name
  local name=$1; shift
  echo "instance profile $name"
  aws iam get-role --role-name "$name" >/dev/null 2>&1 \
    || aws iam create-role --role-name "$name" --assume-role-policy-document "$TRUST" >/dev/null
  local i=0
  for policy in "$@"; do
    aws iam put-role-policy --role-name "$name" --policy-name "$name-$i" --policy-document "$policy"
    i=$((i + 1))
  done
  if ! aws iam get-instance-profile --instance-profile-name "$name" >/dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
    NEW_PROFILE=1
  fi
  # `ray up` right after creation would be refused ("Invalid IamInstanceProfile"): wait for it.
  aws iam wait instance-profile-exists --instance-profile-name "$name"
}
NEW_PROFILE=0
profile mri-sr-worker "$S3_POLICY"
profile mri-sr-head "$S3_POLICY" "$AUTOSCALER_POLICY"
if [ "$NEW_PROFILE" = 1 ]; then
  echo "waiting ${PROFILE_PROPAGATION_S:-15} s for the new instance profiles to reach EC2"
  sleep "${PROFILE_PROPAGATION_S:-15}"
fi

echo "spot service-linked role"  # a fresh account's first spot request fails without it
if ! out=$(aws iam create-service-linked-role --aws-service-name spot.amazonaws.com 2>&1); then
  case $out in
    *"has been taken"* | *"already exists"*) ;;  # made before, by this script or by AWS
    *) echo "$out" >&2; exit 1 ;;
  esac
fi

AMI=$(aws ssm get-parameter --name "$DLAMI_PARAMETER" --query Parameter.Value --output text)
echo "Deep Learning AMI $AMI ($DLAMI_PARAMETER)"

echo "pinning region, subnets, security group and AMI into $CLUSTER_FILE"
PIN="# pinned by cluster/aws-setup.sh"
sed -i -E \
  -e "s|^(  region:).*|\1 $REGION  $PIN|" \
  -e "s|^( +ImageId:).*|\1 $AMI  $PIN|" \
  -e "s|^( +SubnetIds:).*|\1 [${SUBNETS//,/, }]  $PIN|" \
  -e "s|^( +SecurityGroupIds:).*|\1 [$SG]  $PIN|" \
  "$CLUSTER_FILE"

echo "done: ray get-auth-token --generate && ray up $CLUSTER_FILE  (data goes to s3://$BUCKET/data/)"
